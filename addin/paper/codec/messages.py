"""Server -> client messages of the TWS API at server version 178 (everything but the order codec).

Each function returns one complete frame (length prefix included) and reads top to bottom like the
client code that decodes it: ``ibapi.decoder.Decoder.process*Msg`` (or the ``EWrapper`` signature for
the messages ibapi decodes by signature), and ``ib_async.decoder.Decoder``, which unpacks fixed field
counts. OPEN_ORDER / COMPLETED_ORDER live in :mod:`addin.paper.codec.order_codec`.

How values are written (the way a real gateway writes them, see /work/shared/protocol/captures):

* ints as ints; a float passed for an int field is truncated (``int()``), never written "12.0";
* prices as ``repr(float)``; ``None`` or the unset double as ``1.7976931348623157E308``;
* sizes / quantities (ibapi ``Decimal``) as plain decimal text ("1000", "0.01", "1.24115341"); an unset
  size (None / ``UNSET_DECIMAL``) as an empty field, which ibapi reads as ``UNSET_DECIMAL``;
* an unset contract strike as ``0.0`` (what a gateway writes for a stock);
* free text that may hold non-ASCII characters (error text, longName) escaped as ``\\uXXXX``: from server
  version 153 (``MIN_SERVER_VER_ENCODE_MSG_ASCII7``) ibapi decodes those fields with "unicode-escape".

Only three encoders change layout between server versions 157 (the oldest ib_async accepts) and 178:
:func:`error`, :func:`contract_data` and :func:`execution_data` take a keyword ``server_version``
(default 178) so that real captures recorded at older versions can be rebuilt field for field.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal

from ibapi.server_versions import (
    MIN_SERVER_VER_ADVANCED_ORDER_REJECT,  # 166
    MIN_SERVER_VER_FRACTIONAL_SIZE_SUPPORT,  # 163
    MIN_SERVER_VER_PENDING_PRICE_REVISION,  # 178
    MIN_SERVER_VER_SIZE_RULES,  # 164
)

from ...protocol import times
from ...protocol.messages import IN
from ...protocol.unset import UNSET_DECIMAL, UNSET_DOUBLE, UNSET_INTEGER
from .wire import SERVER_VERSION, frame

#: Oldest server version the version-aware encoders can write (ib_async 2.1.0 refuses anything older).
MIN_ENCODER_SERVER_VERSION = 157

#: The gateway's local time zone: the zone bar times and execution times are written in by default.
DEFAULT_TZ = "US/Eastern"


# --- value helpers -------------------------------------------------------------------------------

def _int(value) -> int:
    """An int field; None -> the unset int."""
    if value is None:
        return UNSET_INTEGER
    return int(value)


def _float(value) -> float:
    """A double field; None -> the unset double (written ``1.7976931348623157E308``)."""
    if value is None:
        return UNSET_DOUBLE
    return float(value)


def _strike(value) -> float:
    """A contract strike: unset (None, the unset double) is written 0.0 like a gateway does."""
    if value is None or value == UNSET_DOUBLE:
        return 0.0
    return float(value)


def _size(value) -> str:
    """A size / quantity (ibapi ``Decimal``) as plain decimal text; unset -> empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Decimal):
        if value == UNSET_DECIMAL or value.is_nan():
            return ""
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, float):
        if math.isnan(value) or value == UNSET_DOUBLE:
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if value == UNSET_INTEGER:
        return ""
    return str(int(value))


def _empty_if_zero(value):
    """Fields a gateway leaves empty when zero (evMultiplier, yieldRedemptionDate)."""
    return "" if not value else value


def _ascii7(text: str) -> str:
    """Free text as a gateway writes it from version 153: non-ASCII characters as ``\\uXXXX``."""
    text = text or ""
    if text.isascii():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if code < 128:
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def _epoch(value) -> int:
    """Epoch seconds from an int or a datetime (naive = UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp())
    return int(value)


def format_time(value, tz=DEFAULT_TZ) -> str:
    """A point in time as a gateway writes it in execution times and historical start/end:
    ``yyyymmdd hh:mm:ss <zone>`` (``20231203 20:15:20 US/Eastern``). Text passes through unchanged;
    an aware datetime is converted to ``tz``; a naive one is taken as wall time in ``tz``."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return times.format_zoned(value, tz)
    if isinstance(value, date):
        return times.format_date(value)
    raise TypeError(f"cannot format {value!r} as a TWS time")


def format_bar_time(value, format_date: int = 1, *, daily: bool | None = None, tz=DEFAULT_TZ) -> str:
    """A historical bar's date field as IB writes it.

    * text: unchanged (already formatted by the caller);
    * daily and longer bars (``daily=True``, or a ``date`` that is not a ``datetime``): ``yyyymmdd``,
      the bar's own calendar date (no zone conversion), whatever formatDate says;
    * formatDate 2: epoch seconds (naive datetimes are wall time in ``tz``);
    * formatDate 1: ``yyyymmdd hh:mm:ss <zone>`` in ``tz``, the zone suffix a gateway at this version
      appends (ib_async's ``util.parseIBDatetime`` reads it as a ZoneInfo; ibapi passes the text on).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value))
    if not isinstance(value, datetime):
        if isinstance(value, date):
            return times.format_date(value)
        raise TypeError(f"cannot format {value!r} as a bar time")
    if daily:
        return times.format_date(value)
    if format_date == 2:
        return times.format_epoch(value, tz)
    return times.format_zoned(value, tz)


def _attr_mask(attrib, *bits: str) -> int:
    """An attribute mask from an int or an ibapi/ib_async attrib object (``bits`` in bit order)."""
    if attrib is None:
        return 0
    if isinstance(attrib, int):
        return attrib
    return sum(1 << i for i, name in enumerate(bits) if getattr(attrib, name, False))


def _check_version(server_version: int) -> None:
    if not MIN_ENCODER_SERVER_VERSION <= server_version <= SERVER_VERSION:
        raise ValueError(f"server version {server_version} is outside "
                         f"{MIN_ENCODER_SERVER_VERSION}..{SERVER_VERSION}")


# --- market data ---------------------------------------------------------------------------------

def tick_price(req_id: int, tick_type: int, price, size=None, attr_mask=0) -> bytes:
    """TICK_PRICE (1) -> ``tickPrice`` (+ ``tickSize`` for bid/ask/last and their delayed twins).
    ``attr_mask``: bit 1 canAutoExecute, 2 pastLimit, 4 preOpen (or a ``TickAttrib``)."""
    return frame(
        IN.TICK_PRICE,
        6,  # version
        _int(req_id),
        _int(tick_type),
        _float(price),
        _size(size),  # ver 2 field
        _attr_mask(attr_mask, "canAutoExecute", "pastLimit", "preOpen"),  # ver 3 field
    )


def tick_option_computation(req_id: int, tick_type: int, implied_vol, delta, opt_price, pv_dividend, gamma,
                            vega, theta, und_price, tick_attrib: int = 0) -> bytes:
    """TICK_OPTION_COMPUTATION (21) -> ``tickOptionComputation``: no version from server version 156
    (MIN_SERVER_VER_PRICE_BASED_VOLATILITY); reqId, tickType, tickAttrib (0 return-based, 1 price-based),
    impliedVol, delta, optPrice, pvDividend, gamma, vega, theta, undPrice. None is IB's "not computed"
    (-1 for impliedVol, optPrice, pvDividend, undPrice; -2 for delta, gamma, vega, theta)."""
    def value(x, missing):
        return missing if x is None else float(x)
    return frame(IN.TICK_OPTION_COMPUTATION, _int(req_id), _int(tick_type), _int(tick_attrib),
                 value(implied_vol, -1), value(delta, -2), value(opt_price, -1), value(pv_dividend, -1),
                 value(gamma, -2), value(vega, -2), value(theta, -2), value(und_price, -1))


def tick_size(req_id: int, tick_type: int, size) -> bytes:
    """TICK_SIZE (2) -> ``tickSize``."""
    return frame(IN.TICK_SIZE, 6, _int(req_id), _int(tick_type), _size(size))


def tick_generic(req_id: int, tick_type: int, value) -> bytes:
    """TICK_GENERIC (45) -> ``tickGeneric`` (value is a double)."""
    return frame(IN.TICK_GENERIC, 6, _int(req_id), _int(tick_type), _float(value))


def tick_string(req_id: int, tick_type: int, value: str) -> bytes:
    """TICK_STRING (46) -> ``tickString``."""
    return frame(IN.TICK_STRING, 6, _int(req_id), _int(tick_type), value or "")


def tick_req_params(req_id: int, min_tick, bbo_exchange: str, snapshot_permissions: int) -> bytes:
    """TICK_REQ_PARAMS (81) -> ``tickReqParams``. No version field."""
    return frame(IN.TICK_REQ_PARAMS, _int(req_id), _float(min_tick), bbo_exchange or "",
                 _int(snapshot_permissions))


def market_data_type(req_id: int, data_type: int) -> bytes:
    """MARKET_DATA_TYPE (58) -> ``marketDataType`` (1 live, 2 frozen, 3 delayed, 4 delayed frozen)."""
    return frame(IN.MARKET_DATA_TYPE, 1, _int(req_id), _int(data_type))


def tick_snapshot_end(req_id: int) -> bytes:
    """TICK_SNAPSHOT_END (57) -> ``tickSnapshotEnd``."""
    return frame(IN.TICK_SNAPSHOT_END, 1, _int(req_id))


def tick_by_tick_last(req_id: int, tick_type: int, time, price, size, mask=0, exchange: str = "",
                      special_conditions: str = "") -> bytes:
    """TICK_BY_TICK (99), tick type 1 (Last) or 2 (AllLast) -> ``tickByTickAllLast``.
    ``mask``: bit 1 pastLimit, 2 unreported (or a ``TickAttribLast``)."""
    if tick_type not in (1, 2):
        raise ValueError(f"tick_by_tick_last needs tick type 1 or 2, got {tick_type}")
    return frame(
        IN.TICK_BY_TICK,
        _int(req_id),
        tick_type,
        _epoch(time),
        _float(price),
        _size(size),
        _attr_mask(mask, "pastLimit", "unreported"),
        exchange or "",
        special_conditions or "",
    )


def tick_by_tick_bid_ask(req_id: int, time, bid_price, ask_price, bid_size, ask_size, mask=0) -> bytes:
    """TICK_BY_TICK (99), tick type 3 (BidAsk) -> ``tickByTickBidAsk``.
    ``mask``: bit 1 bidPastLow, 2 askPastHigh (or a ``TickAttribBidAsk``)."""
    return frame(
        IN.TICK_BY_TICK,
        _int(req_id),
        3,
        _epoch(time),
        _float(bid_price),
        _float(ask_price),
        _size(bid_size),
        _size(ask_size),
        _attr_mask(mask, "bidPastLow", "askPastHigh"),
    )


def tick_by_tick_mid_point(req_id: int, time, mid_point) -> bytes:
    """TICK_BY_TICK (99), tick type 4 (MidPoint) -> ``tickByTickMidPoint``."""
    return frame(IN.TICK_BY_TICK, _int(req_id), 4, _epoch(time), _float(mid_point))


def tick_by_tick(req_id: int, tick_type: int, time, *values) -> bytes:
    """TICK_BY_TICK (99) for any tick type, values in the order ibapi reads them:

    * 1/2 (Last/AllLast): price, size, mask, exchange, specialConditions
    * 3 (BidAsk): bidPrice, askPrice, bidSize, askSize, mask
    * 4 (MidPoint): midPoint
    """
    if tick_type in (1, 2):
        return tick_by_tick_last(req_id, tick_type, time, *values)
    if tick_type == 3:
        return tick_by_tick_bid_ask(req_id, time, *values)
    if tick_type == 4:
        return tick_by_tick_mid_point(req_id, time, *values)
    raise ValueError(f"unknown tick-by-tick type {tick_type}")


# --- session -------------------------------------------------------------------------------------

def error(req_id: int, code: int, text: str, advanced_reject_json: str = "", *,
          server_version: int = SERVER_VERSION) -> bytes:
    """ERR_MSG (4) -> ``error(reqId, errorTime=0, errorCode, errorString, advancedOrderRejectJson)``.
    From 194 on the version field goes and errorTime is appended: not at 178."""
    _check_version(server_version)
    fields = [IN.ERR_MSG, 2, _int(req_id), _int(code), _ascii7(text)]
    if server_version >= MIN_SERVER_VER_ADVANCED_ORDER_REJECT:
        fields.append(_ascii7(advanced_reject_json))
    return frame(*fields)


def next_valid_id(order_id: int) -> bytes:
    """NEXT_VALID_ID (9) -> ``nextValidId``."""
    return frame(IN.NEXT_VALID_ID, 1, _int(order_id))


def managed_accounts(accounts) -> bytes:
    """MANAGED_ACCTS (15) -> ``managedAccounts("DU1,DU2")``. ``accounts``: a list or the joined text."""
    text = accounts if isinstance(accounts, str) else ",".join(accounts)
    return frame(IN.MANAGED_ACCTS, 1, text)


def current_time(epoch_seconds) -> bytes:
    """CURRENT_TIME (49) -> ``currentTime`` (epoch seconds)."""
    return frame(IN.CURRENT_TIME, 1, _epoch(epoch_seconds))


# --- contract details ----------------------------------------------------------------------------

def contract_data(req_id: int, details, *, server_version: int = SERVER_VERSION) -> bytes:
    """CONTRACT_DATA (10) -> ``contractDetails``: the reverse of ibapi ``processContractDataMsg``.

    ``details`` is an ``ibapi.contract.ContractDetails`` (ib_async's has the same attribute names).
    Bonds (BOND_CONTRACT_DATA, 18) are not covered.
    """
    _check_version(server_version)
    c = details.contract
    fields: list = [IN.CONTRACT_DATA]
    if server_version < MIN_SERVER_VER_SIZE_RULES:
        fields.append(8)  # message version; gone from 164 on
    fields.append(_int(req_id))  # ver 3 field
    last_trade = c.lastTradeDateOrContractMonth or ""
    if last_trade and getattr(details, "lastTradeTime", ""):
        last_trade = f"{last_trade} {details.lastTradeTime}"  # ibapi splits it on the space
    fields += [
        c.symbol,
        c.secType,
        last_trade,
        # lastTradeDate only from 182 (MIN_SERVER_VER_LAST_TRADE_DATE): not at 178
        _strike(c.strike),
        c.right,
        c.exchange,
        c.currency,
        c.localSymbol,
        details.marketName,
        c.tradingClass,
        _int(c.conId),
        _float(details.minTick),
    ]
    if server_version < MIN_SERVER_VER_SIZE_RULES:
        fields.append(1)  # mdSizeMultiplier (110..163), ignored by the clients
    fields += [
        c.multiplier,
        details.orderTypes,
        details.validExchanges,
        _int(details.priceMagnifier),  # ver 2 field
        _int(details.underConId),  # ver 4 field
        _ascii7(details.longName),  # ver 5 field; unicode-escaped from 153
        c.primaryExchange,
        details.contractMonth,  # ver 6 fields
        details.industry,
        details.category,
        details.subcategory,
        details.timeZoneId,
        details.tradingHours,
        details.liquidHours,
        details.evRule,  # ver 8 fields
        _empty_if_zero(details.evMultiplier),
    ]
    sec_ids = details.secIdList or []  # ver 7 field
    fields.append(len(sec_ids))
    for tag_value in sec_ids:
        fields += [tag_value.tag, tag_value.value]
    fields += [
        _int(details.aggGroup),  # 121 MIN_SERVER_VER_AGG_GROUP
        details.underSymbol,  # 122 MIN_SERVER_VER_UNDERLYING_INFO
        details.underSecType,
        details.marketRuleIds,  # 126 MIN_SERVER_VER_MARKET_RULES
        details.realExpirationDate,  # 134 MIN_SERVER_VER_REAL_EXPIRATION_DATE
        details.stockType,  # 152 MIN_SERVER_VER_STOCK_TYPE
    ]
    if MIN_SERVER_VER_FRACTIONAL_SIZE_SUPPORT <= server_version < MIN_SERVER_VER_SIZE_RULES:
        fields.append(_size(details.minSize))  # sizeMinTick (163 only)
    if server_version >= MIN_SERVER_VER_SIZE_RULES:
        fields += [
            _size(details.minSize),
            _size(details.sizeIncrement),
            _size(details.suggestedSizeIncrement),
        ]
    # fund fields (179, secType FUND) and ineligibility reasons (186): not at 178
    return frame(*fields)


def contract_data_end(req_id: int) -> bytes:
    """CONTRACT_DATA_END (52) -> ``contractDetailsEnd``."""
    return frame(IN.CONTRACT_DATA_END, 1, _int(req_id))


# --- orders and executions -----------------------------------------------------------------------

def order_status(order_id: int, status: str, filled, remaining, avg_fill_price, perm_id: int,
                 parent_id: int, last_fill_price, client_id: int, why_held: str = "",
                 mkt_cap_price=0.0) -> bytes:
    """ORDER_STATUS (3) -> ``orderStatus``. No version field from 131 (MIN_SERVER_VER_MARKET_CAP_PRICE)."""
    return frame(
        IN.ORDER_STATUS,
        _int(order_id),
        status,
        _size(filled),
        _size(remaining),
        _float(avg_fill_price),
        _int(perm_id),  # ver 2 field
        _int(parent_id),  # ver 3 field
        _float(last_fill_price),  # ver 4 field
        _int(client_id),  # ver 5 field
        why_held or "",  # ver 6 field
        _float(mkt_cap_price),  # 131 MIN_SERVER_VER_MARKET_CAP_PRICE
    )


def execution_data(req_id: int, contract, execution, *, server_version: int = SERVER_VERSION,
                   tz=DEFAULT_TZ) -> bytes:
    """EXECUTION_DATA (11) -> ``execDetails(reqId, contract, execution)`` (reqId -1 for a live fill).

    ``execution`` is an ``ibapi.execution.Execution`` (ib_async's works too); its ``time`` is text
    (``20231203 20:15:20 US/Eastern``) or a datetime, written in ``tz`` with the zone suffix.
    No version field from 136 (MIN_SERVER_VER_LAST_LIQUIDITY).
    """
    _check_version(server_version)
    ex = execution
    fields = [
        IN.EXECUTION_DATA,
        _int(req_id),  # ver 7 field
        _int(ex.orderId),
        # contract
        _int(contract.conId),  # ver 5 field
        contract.symbol,
        contract.secType,
        contract.lastTradeDateOrContractMonth,
        _strike(contract.strike),
        contract.right,
        contract.multiplier,  # ver 9 field
        contract.exchange,
        contract.currency,
        contract.localSymbol,
        contract.tradingClass,  # ver 10 field
        # execution
        ex.execId,
        format_time(ex.time, tz) if ex.time else "",
        ex.acctNumber,
        ex.exchange,
        ex.side,
        _size(ex.shares),
        _float(ex.price),
        _int(ex.permId),  # ver 2 field
        _int(ex.clientId),  # ver 3 field
        _int(ex.liquidation),  # ver 4 field
        _size(ex.cumQty),  # ver 6 fields
        _float(ex.avgPrice),
        ex.orderRef,  # ver 8 field
        ex.evRule,  # ver 9 fields
        _empty_if_zero(ex.evMultiplier),
        ex.modelCode,  # 103 MIN_SERVER_VER_MODELS_SUPPORT
        _int(ex.lastLiquidity),  # 136 MIN_SERVER_VER_LAST_LIQUIDITY
    ]
    if server_version >= MIN_SERVER_VER_PENDING_PRICE_REVISION:
        fields.append(bool(ex.pendingPriceRevision))  # 178
    # submitter from 198 (MIN_SERVER_VER_SUBMITTER): not at 178
    return frame(*fields)


def commission_report(report) -> bytes:
    """COMMISSION_REPORT (59) -> ibapi ``commissionAndFeesReport`` / ib_async ``commissionReport``.

    ``report``: ``ibapi.commission_and_fees_report.CommissionAndFeesReport`` (ibapi 10.46; its amount
    is ``commissionAndFees``) or an older ``CommissionReport`` / ib_async ``CommissionReport``
    (``commission``). Unset realizedPNL / yield go out as ``1.7976931348623157E308``, as a gateway does.
    """
    amount = getattr(report, "commissionAndFees", None)
    if amount is None:
        amount = getattr(report, "commission", 0.0)
    return frame(
        IN.COMMISSION_AND_FEES_REPORT,
        1,  # version
        report.execId,
        _float(amount),
        report.currency,
        _float(report.realizedPNL),
        _float(report.yield_),
        _empty_if_zero(report.yieldRedemptionDate),  # YYYYMMDD, empty when none
    )


def open_order_end() -> bytes:
    """OPEN_ORDER_END (53) -> ``openOrderEnd``."""
    return frame(IN.OPEN_ORDER_END, 1)


def execution_data_end(req_id: int) -> bytes:
    """EXECUTION_DATA_END (55) -> ``execDetailsEnd``."""
    return frame(IN.EXECUTION_DATA_END, 1, _int(req_id))


# --- positions and accounts ----------------------------------------------------------------------

def _position_contract(contract) -> list:
    """The contract of POSITION_DATA / POSITION_MULTI: conId .. tradingClass with exchange and
    without primaryExchange."""
    return [
        _int(contract.conId),
        contract.symbol,
        contract.secType,
        contract.lastTradeDateOrContractMonth,
        _strike(contract.strike),
        contract.right,
        contract.multiplier,
        contract.exchange,
        contract.currency,
        contract.localSymbol,
        contract.tradingClass,  # ver 2 field
    ]


def position(account: str, contract, position, avg_cost) -> bytes:
    """POSITION_DATA (61) -> ``position(account, contract, position, avgCost)``."""
    return frame(IN.POSITION_DATA, 3, account, *_position_contract(contract), _size(position),
                 _float(avg_cost))  # avgCost: ver 3 field


def position_end() -> bytes:
    """POSITION_END (62) -> ``positionEnd``."""
    return frame(IN.POSITION_END, 1)


def position_multi(req_id: int, account: str, model_code: str, contract, position, avg_cost) -> bytes:
    """POSITION_MULTI (71) -> ``positionMulti(reqId, account, modelCode, contract, pos, avgCost)``;
    on the wire the model code comes last."""
    return frame(IN.POSITION_MULTI, 1, _int(req_id), account, *_position_contract(contract),
                 _size(position), _float(avg_cost), model_code or "")


def position_multi_end(req_id: int) -> bytes:
    """POSITION_MULTI_END (72) -> ``positionMultiEnd``."""
    return frame(IN.POSITION_MULTI_END, 1, _int(req_id))


def account_summary(req_id: int, account: str, tag: str, value, currency: str) -> bytes:
    """ACCOUNT_SUMMARY (63) -> ``accountSummary`` (value is text)."""
    return frame(IN.ACCOUNT_SUMMARY, 1, _int(req_id), account, tag, _text_value(value), currency or "")


def account_summary_end(req_id: int) -> bytes:
    """ACCOUNT_SUMMARY_END (64) -> ``accountSummaryEnd``."""
    return frame(IN.ACCOUNT_SUMMARY_END, 1, _int(req_id))


def _text_value(value) -> str:
    """An account value (always text on the wire): numbers as a gateway prints them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return _size(value)
    if isinstance(value, float):
        # money the way TWS prints it ("1057315.32", "1000000.00"); finer values keep every digit
        if math.isfinite(value) and round(value, 2) == value:
            return f"{value:.2f}"
        return repr(value)
    return str(value)


def account_value(key: str, value, currency: str, account: str) -> bytes:
    """ACCT_VALUE (6) -> ``updateAccountValue(key, val, currency, accountName)``."""
    return frame(IN.ACCT_VALUE, 2, key, _text_value(value), currency or "", account)


def portfolio_value(contract, position, market_price, market_value, average_cost, unrealized_pnl,
                    realized_pnl, account: str) -> bytes:
    """PORTFOLIO_VALUE (7) -> ``updatePortfolio``. Version 8: the contract carries multiplier and
    primaryExchange (ver 7) and tradingClass (ver 8), but no exchange."""
    return frame(
        IN.PORTFOLIO_VALUE,
        8,  # version
        _int(contract.conId),  # ver 6 field
        contract.symbol,
        contract.secType,
        contract.lastTradeDateOrContractMonth,
        _strike(contract.strike),
        contract.right,
        contract.multiplier,  # ver 7 fields
        contract.primaryExchange,
        contract.currency,
        contract.localSymbol,  # ver 2 field
        contract.tradingClass,  # ver 8 field
        _size(position),
        _float(market_price),
        _float(market_value),
        _float(average_cost),  # ver 3 fields
        _float(unrealized_pnl),
        _float(realized_pnl),
        account,  # ver 4 field
    )


def account_update_time(hhmm: str) -> bytes:
    """ACCT_UPDATE_TIME (8) -> ``updateAccountTime("HH:MM")``."""
    if isinstance(hhmm, datetime):
        hhmm = f"{hhmm:%H:%M}"
    return frame(IN.ACCT_UPDATE_TIME, 1, hhmm)


def account_download_end(account: str) -> bytes:
    """ACCT_DOWNLOAD_END (54) -> ``accountDownloadEnd``."""
    return frame(IN.ACCT_DOWNLOAD_END, 1, account)


def account_update_multi(req_id: int, account: str, model_code: str, key: str, value, currency: str) -> bytes:
    """ACCOUNT_UPDATE_MULTI (73) -> ``accountUpdateMulti(reqId, account, modelCode, key, value, currency)``."""
    return frame(IN.ACCOUNT_UPDATE_MULTI, 1, _int(req_id), account, model_code or "", key,
                 _text_value(value), currency or "")


def account_update_multi_end(req_id: int) -> bytes:
    """ACCOUNT_UPDATE_MULTI_END (74) -> ``accountUpdateMultiEnd``."""
    return frame(IN.ACCOUNT_UPDATE_MULTI_END, 1, _int(req_id))


def pnl(req_id: int, daily, unrealized, realized) -> bytes:
    """PNL (94) -> ``pnl``. No version field; unrealized from 129, realized from 135."""
    return frame(IN.PNL, _int(req_id), _float(daily), _float(unrealized), _float(realized))


def pnl_single(req_id: int, pos, daily, unrealized, realized, value) -> bytes:
    """PNL_SINGLE (95) -> ``pnlSingle(reqId, pos, dailyPnL, unrealizedPnL, realizedPnL, value)``."""
    return frame(IN.PNL_SINGLE, _int(req_id), _size(pos), _float(daily), _float(unrealized),
                 _float(realized), _float(value))


# --- historical data -----------------------------------------------------------------------------

def _bar_fields(bar):
    """(time, open, high, low, close, volume, wap, count) of a bar object: the market model's
    (time/wap/count), ibapi's ``BarData`` (date/wap/barCount) or ib_async's (date/average/barCount)."""
    time = getattr(bar, "time", None)
    if time is None:
        time = bar.date
    wap = getattr(bar, "wap", None)
    if wap is None:
        wap = getattr(bar, "average", None)
    count = getattr(bar, "count", None)
    if count is None or callable(count):
        count = getattr(bar, "barCount", None)
    return time, bar.open, bar.high, bar.low, bar.close, getattr(bar, "volume", None), wap, count


def _bar_size(value) -> str:
    """A bar's volume / WAP: IB writes -1 where a bar has none (MIDPOINT, BID, ASK bars); never
    empty, since ib_async reads these with a bare ``float()``."""
    text = _size(value)
    return text if text else "-1"


def _bar_count(value) -> int:
    return -1 if value is None or value == UNSET_INTEGER else int(value)


def historical_data(req_id: int, start, end, bars, format_date: int = 1, *, daily: bool | None = None,
                    tz=DEFAULT_TZ) -> bytes:
    """HISTORICAL_DATA (17) -> ``historicalData`` per bar, then ``historicalDataEnd(reqId, start, end)``.

    At 178 (below 196, MIN_SERVER_VER_HISTORICAL_DATA_END) the clients fire historicalDataEnd
    themselves from the start/end fields; there is no separate HISTORICAL_DATA_END message. No version
    field from 124 (MIN_SERVER_VER_SYNT_REALTIME_BARS). ``start``/``end``: text, or datetimes written
    ``yyyymmdd hh:mm:ss <zone>`` in ``tz``. Bar times: see :func:`format_bar_time`.
    """
    bars = list(bars)
    fields = [IN.HISTORICAL_DATA, _int(req_id), format_time(start, tz), format_time(end, tz), len(bars)]
    for bar in bars:
        time, open_, high, low, close, volume, wap, count = _bar_fields(bar)
        fields += [
            format_bar_time(time, format_date, daily=daily, tz=tz),
            _float(open_),
            _float(high),
            _float(low),
            _float(close),
            _bar_size(volume),
            _bar_size(wap),
            _bar_count(count),  # ver 3 field
        ]
    return frame(*fields)


def historical_data_update(req_id: int, bar, format_date: int = 1, *, daily: bool | None = None,
                           tz=DEFAULT_TZ) -> bytes:
    """HISTORICAL_DATA_UPDATE (90) -> ``historicalDataUpdate`` (keepUpToDate). Note the field order:
    barCount first, then date, open, **close, high, low**, wap, volume."""
    time, open_, high, low, close, volume, wap, count = _bar_fields(bar)
    return frame(
        IN.HISTORICAL_DATA_UPDATE,
        _int(req_id),
        _bar_count(count),
        format_bar_time(time, format_date, daily=daily, tz=tz),
        _float(open_),
        _float(close),
        _float(high),
        _float(low),
        _bar_size(wap),
        _bar_size(volume),
    )


def head_timestamp(req_id: int, timestamp, format_date: int = 1, *, tz=DEFAULT_TZ) -> bytes:
    """HEAD_TIMESTAMP (88) -> ``headTimestamp`` (text; a datetime is written like a bar time)."""
    return frame(IN.HEAD_TIMESTAMP, _int(req_id), format_bar_time(timestamp, format_date, tz=tz))


__all__ = [
    "DEFAULT_TZ", "MIN_ENCODER_SERVER_VERSION", "format_time", "format_bar_time",
    "tick_price", "tick_size", "tick_option_computation",
    "tick_generic", "tick_string", "tick_req_params", "market_data_type",
    "tick_snapshot_end", "tick_by_tick", "tick_by_tick_last", "tick_by_tick_bid_ask",
    "tick_by_tick_mid_point", "error", "next_valid_id", "managed_accounts", "current_time",
    "contract_data", "contract_data_end", "order_status", "execution_data", "commission_report",
    "open_order_end", "execution_data_end", "position", "position_end", "position_multi",
    "position_multi_end", "account_summary", "account_summary_end", "account_value", "portfolio_value",
    "account_update_time", "account_download_end", "account_update_multi", "account_update_multi_end",
    "pnl", "pnl_single", "historical_data", "historical_data_update", "head_timestamp",
]


# --- reference data: symbols, market rules, scanners, news, account metadata ----------------------
# Appended for the reference service (addin/paper/services/reference.py); each reads like the ibapi
# ``Decoder.process*`` method named (or, for wrapped messages, the EWrapper signature after a version).

def symbol_samples(req_id: int, descriptions) -> bytes:
    """SYMBOL_SAMPLES (79) -> ``symbolSamples``: reqId, count, then per ``ContractDescription``: conId,
    symbol, secType, primaryExchange, currency, derivative secType count and each, description and
    issuerId (both from 176, MIN_SERVER_VER_BOND_ISSUERID)."""
    fields: list = [IN.SYMBOL_SAMPLES, _int(req_id), len(descriptions)]
    for d in descriptions:
        c = d.contract
        derivatives = list(d.derivativeSecTypes or [])
        fields += [_int(c.conId), c.symbol, c.secType, c.primaryExchange, c.currency, len(derivatives),
                   *derivatives, _ascii7(c.description), c.issuerId]
    return frame(*fields)


def market_rule(rule_id: int, increments) -> bytes:
    """MARKET_RULE (93) -> ``marketRule(marketRuleId, [PriceIncrement])``: id, count, then lowEdge and
    increment per step. ``increments``: (lowEdge, increment) pairs."""
    fields: list = [IN.MARKET_RULE, _int(rule_id), len(increments)]
    for low_edge, increment in increments:
        fields += [_float(low_edge), _float(increment)]
    return frame(*fields)


def scanner_parameters(xml: str) -> bytes:
    """SCANNER_PARAMETERS (19) -> ``scannerParameters(xml)``: version 1, the XML document."""
    return frame(IN.SCANNER_PARAMETERS, 1, xml)


def scanner_data(req_id: int, rows) -> bytes:
    """SCANNER_DATA (20) -> one ``scannerData`` per row, then ``scannerDataEnd``: version 3, reqId,
    count, then per row rank, conId, symbol, secType, lastTradeDateOrContractMonth, strike, right,
    exchange, currency, localSymbol, marketName, tradingClass, distance, benchmark, projection, legsStr.
    ``rows``: (rank, ContractDetails) pairs; the contract's exchange is the one the scan reports."""
    fields: list = [IN.SCANNER_DATA, 3, _int(req_id), len(rows)]
    for rank, details in rows:
        c = details.contract
        fields += [_int(rank), _int(c.conId), c.symbol, c.secType, c.lastTradeDateOrContractMonth,
                   _strike(c.strike), c.right, c.exchange, c.currency, c.localSymbol, details.marketName,
                   c.tradingClass, "", "", "", ""]
    return frame(*fields)


def news_providers(providers) -> bytes:
    """NEWS_PROVIDERS (85) -> ``newsProviders``: count, then code and name per (code, name) pair."""
    fields: list = [IN.NEWS_PROVIDERS, len(providers)]
    for code, name in providers:
        fields += [code, name]
    return frame(*fields)


def family_codes(codes) -> bytes:
    """FAMILY_CODES (78) -> ``familyCodes``: count, then accountID and familyCodeStr per pair."""
    fields: list = [IN.FAMILY_CODES, len(codes)]
    for account, code in codes:
        fields += [account, code]
    return frame(*fields)


def user_info(req_id: int, white_branding_id: str = "") -> bytes:
    """USER_INFO (107) -> ``userInfo(reqId, whiteBrandingId)``."""
    return frame(IN.USER_INFO, _int(req_id), white_branding_id)


def security_definition_option_parameter(req_id: int, exchange: str, underlying_con_id: int, trading_class: str,
                                         multiplier: str, expirations, strikes) -> bytes:
    """SECURITY_DEFINITION_OPTION_PARAMETER (75) -> ``securityDefinitionOptionParameter``: no version;
    reqId, exchange, underlyingConId, tradingClass, multiplier, then the count and each expiration
    (YYYYMMDD text), then the count and each strike (double)."""
    fields: list = [IN.SECURITY_DEFINITION_OPTION_PARAMETER, _int(req_id), exchange, _int(underlying_con_id),
                    trading_class, multiplier, len(expirations), *expirations, len(strikes)]
    fields += [_float(s) for s in strikes]
    return frame(*fields)


def security_definition_option_parameter_end(req_id: int) -> bytes:
    """SECURITY_DEFINITION_OPTION_PARAMETER_END (76) -> ``securityDefinitionOptionParameterEnd``."""
    return frame(IN.SECURITY_DEFINITION_OPTION_PARAMETER_END, _int(req_id))


def soft_dollar_tiers(req_id: int, tiers) -> bytes:
    """SOFT_DOLLAR_TIERS (77) -> ``softDollarTiers``: reqId, count, then name, value, displayName."""
    fields: list = [IN.SOFT_DOLLAR_TIERS, _int(req_id), len(tiers)]
    for name, value, display_name in tiers:
        fields += [name, value, display_name]
    return frame(*fields)


def smart_components(req_id: int, components) -> bytes:
    """SMART_COMPONENTS (82) -> ``smartComponents``: reqId, count, then bitNumber, exchange and
    exchangeLetter per component."""
    fields: list = [IN.SMART_COMPONENTS, _int(req_id), len(components)]
    for bit, exchange, letter in components:
        fields += [_int(bit), exchange, letter]
    return frame(*fields)


def display_group_list(req_id: int, groups: str) -> bytes:
    """DISPLAY_GROUP_LIST (67) -> ``displayGroupList(reqId, groups)`` ("1|2|3"), version 1."""
    return frame(IN.DISPLAY_GROUP_LIST, 1, _int(req_id), groups)


def display_group_updated(req_id: int, contract_info: str) -> bytes:
    """DISPLAY_GROUP_UPDATED (68) -> ``displayGroupUpdated(reqId, contractInfo)``, version 1."""
    return frame(IN.DISPLAY_GROUP_UPDATED, 1, _int(req_id), contract_info)


def current_time_in_millis(epoch_ms: int) -> bytes:
    """CURRENT_TIME_IN_MILLIS (109) -> ``currentTimeInMillis`` (epoch milliseconds)."""
    return frame(IN.CURRENT_TIME_IN_MILLIS, int(epoch_ms))


__all__ += [
    "symbol_samples", "market_rule", "scanner_parameters", "scanner_data", "news_providers", "family_codes",
    "user_info", "security_definition_option_parameter",
    "security_definition_option_parameter_end", "soft_dollar_tiers", "smart_components",
    "display_group_list", "display_group_updated", "current_time_in_millis",
]


# --- real-time bars and market depth -------------------------------------------------------------

def realtime_bar(req_id: int, time, open_, high, low, close, volume, wap, count) -> bytes:
    """REAL_TIME_BARS (50) -> ``realtimeBar``: version 3, reqId, time (bar start, epoch seconds),
    open, high, low, close, volume (Decimal), wap (Decimal), count."""
    return frame(IN.REAL_TIME_BARS, 3, _int(req_id), _epoch(time), _float(open_), _float(high), _float(low),
                 _float(close), _size(volume), _size(wap), _int(count))


def market_depth(req_id: int, position: int, operation: int, side: int, price, size) -> bytes:
    """MARKET_DEPTH (12) -> ``updateMktDepth``: version 1, reqId, position (row), operation (0 insert,
    1 update, 2 delete), side (0 ask, 1 bid), price, size."""
    return frame(IN.MARKET_DEPTH, 1, _int(req_id), _int(position), _int(operation), _int(side), _float(price),
                 _size(size))


def market_depth_l2(req_id: int, position: int, market_maker: str, operation: int, side: int, price, size,
                    is_smart_depth: bool) -> bytes:
    """MARKET_DEPTH_L2 (13) -> ``updateMktDepthL2``: as :func:`market_depth` with the market maker (or,
    for SMART depth, the exchange) after the position, and isSmartDepth last (from server version 146)."""
    return frame(IN.MARKET_DEPTH_L2, 1, _int(req_id), _int(position), market_maker or "", _int(operation),
                 _int(side), _float(price), _size(size), bool(is_smart_depth))


def mkt_depth_exchanges(descriptions) -> bytes:
    """MKT_DEPTH_EXCHANGES (80) -> ``mktDepthExchanges``: no version; count, then per row exchange,
    secType, listingExch, serviceDataType, aggGroup (the last three from server version 143).
    ``descriptions``: (exchange, secType, listingExch, serviceDataType, aggGroup) tuples or ibapi
    ``DepthMktDataDescription`` objects."""
    fields: list = [IN.MKT_DEPTH_EXCHANGES, len(descriptions)]
    for d in descriptions:
        if not isinstance(d, tuple):
            d = (d.exchange, d.secType, d.listingExch, d.serviceDataType, d.aggGroup)
        exchange, sec_type, listing, service, group = d
        fields += [exchange, sec_type, listing or "", service, _int(group)]
    return frame(*fields)


# --- historical ticks (tick-by-tick's numberOfTicks) ---------------------------------------------

def historical_ticks(req_id: int, ticks, done: bool) -> bytes:
    """HISTORICAL_TICKS (96) -> ``historicalTicks``: reqId, count, per tick time, an unused int (0),
    price, size; done. ``ticks``: (time, price, size) tuples (MIDPOINT ticks have size 0)."""
    fields: list = [IN.HISTORICAL_TICKS, _int(req_id), len(ticks)]
    for time, price, size in ticks:
        fields += [_epoch(time), 0, _float(price), _size(size)]
    return frame(*fields, bool(done))


def historical_ticks_bid_ask(req_id: int, ticks, done: bool) -> bytes:
    """HISTORICAL_TICKS_BID_ASK (97) -> ``historicalTicksBidAsk``: reqId, count, per tick time, mask
    (1 askPastHigh, 2 bidPastLow), bid, ask, bid size, ask size; done.
    ``ticks``: (time, mask, bid, ask, bid_size, ask_size) tuples."""
    fields: list = [IN.HISTORICAL_TICKS_BID_ASK, _int(req_id), len(ticks)]
    for time, mask, bid, ask, bid_size, ask_size in ticks:
        fields += [_epoch(time), _int(mask), _float(bid), _float(ask), _size(bid_size), _size(ask_size)]
    return frame(*fields, bool(done))


def historical_ticks_last(req_id: int, ticks, done: bool) -> bytes:
    """HISTORICAL_TICKS_LAST (98) -> ``historicalTicksLast``: reqId, count, per tick time, mask
    (1 pastLimit, 2 unreported), price, size, exchange, specialConditions; done.
    ``ticks``: (time, mask, price, size, exchange, special_conditions) tuples."""
    fields: list = [IN.HISTORICAL_TICKS_LAST, _int(req_id), len(ticks)]
    for time, mask, price, size, exchange, special in ticks:
        fields += [_epoch(time), _int(mask), _float(price), _size(size), exchange or "", special or ""]
    return frame(*fields, bool(done))
