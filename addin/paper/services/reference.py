"""Reference data and every other request a TWS answers without the market, orders or accounts:
symbol search, market rules, scanners, news, account metadata, display groups, option computations,
and the answer to any request the gateway does not serve.

What each request gets (the table is docs/paper-gateway.md, "Every request and its answer"):

* served from the paper universe: reqMatchingSymbols, reqMarketRule, reqScannerParameters,
  reqScannerSubscription, reqSecDefOptParams (the option classes of ``options.py``), reqSmartComponents;
* served as an account without subscriptions is answered: reqNewsProviders (none), reqManagedAccts,
  reqFamilyCodes (none), reqSoftDollarTiers (none), reqUserInfo (whiteBrandingId ""), display groups;
* refused with IB's error: news articles and historical news, WSH (10276), fundamentals (10358),
  FA configuration (321), option computations on a non-option (321) or an unknown contract (200)
  (on a listed option they are answered: tick type 53);
* accepted silently, as TWS does: cancels, news bulletins, the server log level.

``unhandled`` is the server's fallback: a valid TWS API message id nobody serves is answered with
error 321 naming its request id (IB-style wording: "not supported by the paper gateway") and logged;
an id that is not a TWS API message at all gets 320, as an unreadable request. So no client waits on
silence.
"""

from __future__ import annotations

import copy
import logging
import math
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

from ibapi.contract import Contract, ContractDescription, ContractDetails

from ...protocol import errors
from ...protocol.messages import OUT
from ...protocol.times import format_date
from ...protocol.unset import UNSET_DOUBLE, UNSET_INTEGER
from ..codec import messages, requests, wire
from ..market.market import Instrument, Market
from ..market.option_quotes import black_scholes, carry_of, implied_vol, years_to_expiry
from ..market.options import is_option_query, spec_of
from ..market.options import market_rules as option_market_rules
from .connection import ClientConnection

log = logging.getLogger(__name__)

Handler = Callable[[ClientConnection, wire.Fields], None]

#: reqMatchingSymbols answers at most this many descriptions (IB's documented limit).
MAX_SYMBOL_SAMPLES = 16
#: A scan returns at most this many rows (IB's limit; numberOfRows above it is cut to it).
MAX_SCAN_ROWS = 50

#: The scans the gateway runs: scan code -> IB's display name (as in IB's scanner parameters).
SCAN_CODES = {
    "TOP_PERC_GAIN": "Top % Gainers",
    "TOP_PERC_LOSE": "Top % Losers",
    "MOST_ACTIVE": "Most Active",
    "HOT_BY_VOLUME": "Hot Contracts by Volume",
}
#: Scanner locations: code -> (display name, primary exchanges it covers; empty = every US stock).
SCAN_LOCATIONS = {
    "STK.US": ("US Stocks", ()),
    "STK.US.MAJOR": ("Listed/NASDAQ", ()),
    "STK.NASDAQ": ("NASDAQ", ("NASDAQ",)),
    "STK.ARCA": ("NYSE Arca", ("ARCA",)),
    "STK.NYSE": ("NYSE", ("NYSE",)),
    "STK.AMEX": ("NYSE American", ("AMEX",)),
}

#: reqSmartComponents for the bboExchange the gateway's tickReqParams name ("9c0001"): bit number,
#: exchange, and the exchange's one-letter (CTA) code.
SMART_COMPONENTS = {
    "9c0001": ((1, "AMEX", "A"), (2, "NYSE", "N"), (3, "ARCA", "P"), (4, "ISLAND", "Q"), (5, "BATS", "Z"),
               (6, "BYX", "Y"), (7, "EDGEA", "J"), (8, "EDGX", "K"), (9, "IEX", "V"), (10, "CHX", "M"),
               (11, "PSX", "X"), (12, "MEMX", "U"), (13, "LTSE", "L"), (14, "PEARL", "H")),
}

# IB's codes for what an account without subscriptions cannot have (docs.interactivebrokers message
# codes: 10276 "News feed is not allowed"; live TWS answers reqFundamentalData with 10358 since IB
# withdrew Reuters fundamentals, where older TWS sent 430).
NEWS_NOT_ALLOWED = 10276
FUNDAMENTALS_NOT_ALLOWED = 10358
INVALID_LOG_LEVEL = 319
NO_SCANNER_SUBSCRIPTION = 365
DUPLICATE_SCANNER_ID = 385
CUSTOM_COMPUTATION = 53     # IB's tick type of calculateImpliedVolatility / calculateOptionPrice answers


@dataclass(frozen=True)
class Refusal:
    """IB's error for a request the gateway never serves. ``req_id_index``: where the request's id
    sits after the message id (None: the error is sent with reqId -1)."""

    code: int
    text: str
    req_id_index: int | None = None


_NEWS = Refusal(NEWS_NOT_ALLOWED, "News feed is not allowed.", 0)
_FA = "Error validating request.-'bN' : cause - FA data operations ignored for non FA customers."

#: Requests answered with an error: the account has no subscription or permission for them.
REFUSALS: dict[int, Refusal] = {
    OUT.REQ_NEWS_ARTICLE: _NEWS,
    OUT.REQ_HISTORICAL_NEWS: _NEWS,
    OUT.REQ_WSH_META_DATA: _NEWS,
    OUT.REQ_WSH_EVENT_DATA: _NEWS,
    OUT.REQ_FUNDAMENTAL_DATA: Refusal(FUNDAMENTALS_NOT_ALLOWED, "Fundamentals data is not allowed.", 1),
    OUT.REQ_FA: Refusal(errors.VALIDATION_ERROR, _FA),
    OUT.REPLACE_FA: Refusal(errors.VALIDATION_ERROR, _FA, 3),
    OUT.VERIFY_REQUEST: Refusal(errors.VALIDATION_ERROR, "Error validating request.-'bV' : cause - "
                                "API client authentication is not enabled."),
    OUT.VERIFY_MESSAGE: Refusal(errors.VALIDATION_ERROR, "Error validating request.-'bV' : cause - "
                                "API client authentication is not enabled."),
    OUT.VERIFY_AND_AUTH_REQUEST: Refusal(errors.VALIDATION_ERROR, "Error validating request.-'bV' : cause - "
                                         "API client authentication is not enabled."),
    OUT.VERIFY_AND_AUTH_MESSAGE: Refusal(errors.VALIDATION_ERROR, "Error validating request.-'bV' : cause - "
                                         "API client authentication is not enabled."),
}

#: Requests TWS accepts without an answer: cancels (of anything, known or not) and settings.
SILENT = frozenset({
    OUT.CANCEL_FUNDAMENTAL_DATA, OUT.CANCEL_CALC_IMPLIED_VOLAT, OUT.CANCEL_CALC_OPTION_PRICE,
    OUT.CANCEL_HEAD_TIMESTAMP, OUT.CANCEL_HISTOGRAM_DATA, OUT.CANCEL_WSH_META_DATA, OUT.CANCEL_WSH_EVENT_DATA,
    OUT.REQ_NEWS_BULLETINS, OUT.CANCEL_NEWS_BULLETINS, OUT.UNSUBSCRIBE_FROM_GROUP_EVENTS,
    OUT.CANCEL_REAL_TIME_BARS, OUT.CANCEL_CONTRACT_DATA, OUT.CANCEL_HISTORICAL_TICKS,
})

#: Where the request id sits (after the message id) in requests nobody serves yet, so that the
#: fallback's error names it: reqMktDepth, reqRealTimeBars, reqHistogramData, reqHistoricalTicks, ...
_REQ_ID_INDEX = {
    OUT.REQ_MKT_DEPTH: 1, OUT.CANCEL_MKT_DEPTH: 1, OUT.EXERCISE_OPTIONS: 1, OUT.REQ_REAL_TIME_BARS: 1,
    OUT.REQ_HISTOGRAM_DATA: 0, OUT.REQ_HISTORICAL_TICKS: 0, OUT.REQ_TICK_BY_TICK_DATA: 0,
}

_OUT_NAMES = {value: name for name, value in vars(OUT).items() if not name.startswith("_")}


def request_name(msg_id: int) -> str:
    """ibapi's name of a client message id (``REQ_MKT_DEPTH``), or ``message n`` for an unknown id."""
    return _OUT_NAMES.get(msg_id, f"message {msg_id}")


class ReferenceService:
    """Serves the requests named in the module docstring for every connection. ``market``: the paper
    market (instruments and quotes); ``accounts``: the gateway's account codes."""

    def __init__(self, market: Market, accounts: tuple[str, ...]):
        self.market = market
        self.accounts = tuple(accounts)
        # Open scanner subscriptions per connection (their reqIds); gone with the connection.
        self._scans: weakref.WeakKeyDictionary[ClientConnection, set[int]] = weakref.WeakKeyDictionary()

    def handlers(self) -> dict[int, Handler]:
        """message id -> handler, for the server's handler table."""
        table: dict[int, Handler] = {
            OUT.REQ_MATCHING_SYMBOLS: self.req_matching_symbols,
            OUT.REQ_MARKET_RULE: self.req_market_rule,
            OUT.REQ_SCANNER_PARAMETERS: self.req_scanner_parameters,
            OUT.REQ_SCANNER_SUBSCRIPTION: self.req_scanner_subscription,
            OUT.CANCEL_SCANNER_SUBSCRIPTION: self.cancel_scanner_subscription,
            OUT.REQ_NEWS_PROVIDERS: self.req_news_providers,
            OUT.REQ_MANAGED_ACCTS: self.req_managed_accts,
            OUT.REQ_FAMILY_CODES: self.req_family_codes,
            OUT.REQ_USER_INFO: self.req_user_info,
            OUT.REQ_SEC_DEF_OPT_PARAMS: self.req_sec_def_opt_params,
            OUT.REQ_CALC_IMPLIED_VOLAT: self.req_option_computation,
            OUT.REQ_CALC_OPTION_PRICE: self.req_option_computation,
            OUT.REQ_SMART_COMPONENTS: self.req_smart_components,
            OUT.REQ_SOFT_DOLLAR_TIERS: self.req_soft_dollar_tiers,
            OUT.QUERY_DISPLAY_GROUPS: self.query_display_groups,
            OUT.SUBSCRIBE_TO_GROUP_EVENTS: self.display_group_events,
            OUT.UPDATE_DISPLAY_GROUP: self.display_group_events,
            OUT.SET_SERVER_LOGLEVEL: self.set_server_log_level,
            OUT.REQ_CURRENT_TIME_IN_MILLIS: self.req_current_time_in_millis,
        }
        for msg_id, refusal in REFUSALS.items():
            table[msg_id] = self._refuser(msg_id, refusal)
        for msg_id in SILENT:
            table[msg_id] = _accept_silently
        return table

    # --- the fallback -----------------------------------------------------------------------------
    def unhandled(self, msg_id: int, conn: ClientConnection, fields: wire.Fields) -> None:
        """Answer a request no handler serves: 321 with its request id for a TWS API message, 320
        for an id that is none."""
        if msg_id not in _OUT_NAMES:
            log.warning("client %s sent unknown message id %d: answered with %d", conn.client_id, msg_id,
                        errors.REQUEST_READ_ERROR)
            conn.send_error(-1, errors.REQUEST_READ_ERROR,
                            f"Error reading request.-'{msg_id}' : cause - Unknown message id {msg_id}")
            return
        index = _REQ_ID_INDEX.get(msg_id)
        req_id = -1 if index is None else requests.req_id_at(fields, index)
        name = request_name(msg_id)
        log.info("client %s: %s (message %d, reqId %d) is not served by the paper gateway: answered with %d",
                 conn.client_id, name, msg_id, req_id, errors.VALIDATION_ERROR)
        conn.send_error(req_id, errors.VALIDATION_ERROR,
                        f"Error validating request.-'{msg_id}' : cause - {name} is not supported by the "
                        f"paper gateway.")

    def _refuser(self, msg_id: int, refusal: Refusal) -> Handler:
        def refuse(conn: ClientConnection, fields: wire.Fields) -> None:
            req_id = -1 if refusal.req_id_index is None else requests.req_id_at(fields, refusal.req_id_index)
            log.info("client %s: %s (reqId %d) refused with %d", conn.client_id, request_name(msg_id), req_id,
                     refusal.code)
            conn.send_error(req_id, refusal.code, refusal.text)
        return refuse

    # --- symbols and rules ------------------------------------------------------------------------
    def req_matching_symbols(self, conn: ClientConnection, fields: wire.Fields) -> None:
        req = requests.req_matching_symbols(fields)
        conn.send(messages.symbol_samples(req.req_id, matching_symbols(self.market.instruments, req.pattern)))

    def req_market_rule(self, conn: ClientConnection, fields: wire.Fields) -> None:
        rule_id = requests.req_market_rule(fields)
        increments = market_rules(self.market.instruments).get(rule_id)
        if increments is None:
            # IB documents no answer for an id it does not know; an empty rule keeps clients from waiting.
            log.info("client %s: market rule %d is not used by any paper instrument: empty rule",
                     conn.client_id, rule_id)
            increments = ()
        conn.send(messages.market_rule(rule_id, list(increments)))

    # --- scanners ---------------------------------------------------------------------------------
    def req_scanner_parameters(self, conn: ClientConnection, fields: wire.Fields) -> None:
        conn.send(messages.scanner_parameters(scanner_parameters_xml()))

    def req_scanner_subscription(self, conn: ClientConnection, fields: wire.Fields) -> None:
        req = requests.req_scanner_subscription(fields)
        open_ids = self._scans.setdefault(conn, set())
        if req.req_id in open_ids:
            conn.send_error(req.req_id, DUPLICATE_SCANNER_ID, "Duplicate ticker ID for API scanner subscription.")
            return
        problem = scan_problem(req)
        if problem:
            log.info("client %s: scanner %d refused: %s", conn.client_id, req.req_id, problem)
            conn.send_error(req.req_id, errors.HISTORICAL_DATA_ERROR,
                            f"Historical Market Data Service error message:{problem}")
            return
        open_ids.add(req.req_id)
        rows = run_scan(self.market, req)
        conn.send(messages.scanner_data(req.req_id, rows))

    def cancel_scanner_subscription(self, conn: ClientConnection, fields: wire.Fields) -> None:
        req = requests.cancel_scanner_subscription(fields)
        open_ids = self._scans.get(conn, set())
        if req.req_id not in open_ids:
            conn.send_error(req.req_id, NO_SCANNER_SUBSCRIPTION,
                            f"No scanner subscription found for ticker id:{req.req_id}")
            return
        open_ids.discard(req.req_id)

    # --- account metadata and news ----------------------------------------------------------------
    def req_news_providers(self, conn: ClientConnection, fields: wire.Fields) -> None:
        conn.send(messages.news_providers([]))        # no news subscriptions: IB lists none

    def req_managed_accts(self, conn: ClientConnection, fields: wire.Fields) -> None:
        conn.send(messages.managed_accounts(list(self.accounts)))

    def req_family_codes(self, conn: ClientConnection, fields: wire.Fields) -> None:
        conn.send(messages.family_codes([]))          # individual paper accounts belong to no family

    def req_user_info(self, conn: ClientConnection, fields: wire.Fields) -> None:
        conn.send(messages.user_info(requests.req_id_at(fields, 0), ""))

    def req_soft_dollar_tiers(self, conn: ClientConnection, fields: wire.Fields) -> None:
        conn.send(messages.soft_dollar_tiers(requests.req_id_at(fields, 0), []))

    def req_smart_components(self, conn: ClientConnection, fields: wire.Fields) -> None:
        req = requests.req_smart_components(fields)
        conn.send(messages.smart_components(req.req_id, list(SMART_COMPONENTS.get(req.bbo_exchange, ()))))

    def query_display_groups(self, conn: ClientConnection, fields: wire.Fields) -> None:
        # An API-only gateway has no display groups (TWS would list its seven colour groups).
        conn.send(messages.display_group_list(requests.req_id_at(fields, 1), ""))

    def display_group_events(self, conn: ClientConnection, fields: wire.Fields) -> None:
        """subscribeToGroupEvents (nothing displayed: "") and updateDisplayGroup (the contract echoed)."""
        fields.next_str("version")
        req_id = fields.next_int("reqId")
        info = fields.next_str("groupId/contractInfo") if fields.remaining() else ""
        is_update = fields.items[0] == str(OUT.UPDATE_DISPLAY_GROUP)
        conn.send(messages.display_group_updated(req_id, info if is_update else ""))

    def set_server_log_level(self, conn: ClientConnection, fields: wire.Fields) -> None:
        fields.next_str("version")
        level = fields.next_int("logLevel", default=0)
        if not 1 <= level <= 5:
            conn.send_error(-1, INVALID_LOG_LEVEL, "Invalid log level")

    def req_current_time_in_millis(self, conn: ClientConnection, fields: wire.Fields) -> None:
        conn.send(messages.current_time_in_millis(int(self.market.epoch() * 1000)))

    # --- options ----------------------------------------------------------------------------------
    def req_sec_def_opt_params(self, conn: ClientConnection, fields: wire.Fields) -> None:
        """One securityDefinitionOptionParameter per (exchange, tradingClass) of the underlying's option
        classes (each row the class's expirations on that underlying and its strikes), then the end:
        a stock one row per option exchange, SPX rows for SPX and SPXW on SMART and CBOE, an ES future
        one CME row per tradingClass on it (ES, EW1..). futFopExchange "" means every exchange, a named
        one only that exchange. The underlying is found by conId (by symbol and secType when the conId
        is 0); an unknown one gets error 200, a known one without options the end alone."""
        req = requests.req_sec_def_opt_params(fields)
        if req.underlying_con_id:
            inst = self.market.by_con_id(req.underlying_con_id)
            found = [inst] if inst is not None else []
        else:
            query = Contract()
            query.symbol, query.secType = req.underlying_symbol, req.underlying_sec_type
            found = self.market.lookup(query) if query.symbol.strip() else []
        if len(found) != 1 or (req.underlying_symbol.strip()
                                and req.underlying_symbol.strip().upper() != found[0].symbol.upper()):
            conn.send_error(req.req_id, errors.NO_SECURITY_DEFINITION,
                            "No security definition has been found for the request")
            return
        wanted = req.fut_fop_exchange.strip().upper()
        classes = self.market.options.classes_on(found[0].con_id)
        exchanges = list(dict.fromkeys(e for oc in classes for e in oc.spec.exchanges))
        for exchange in exchanges:
            if wanted and wanted != exchange:
                continue
            for oc in classes:
                if exchange in oc.spec.exchanges:
                    conn.send(messages.security_definition_option_parameter(
                        req.req_id, exchange, oc.underlying.con_id, oc.trading_class, oc.spec.multiplier,
                        [format_date(e) for e in oc.expiries], list(oc.strikes)))
        conn.send(messages.security_definition_option_parameter_end(req.req_id))

    def req_option_computation(self, conn: ClientConnection, fields: wire.Fields) -> None:
        """calculateImpliedVolatility (the vol whose model price is optionPrice) and calculateOptionPrice
        (the model price at the given vol) on a listed option, answered as IB does with one
        tickOptionComputation of tick type 53 (custom), by the quote model of ``option_quotes.py``
        (an underPrice of 0 or less means the underlying's current mid). An optionPrice no vol
        reaches: impliedVol not computed. Not an option: 321; unknown: 200."""
        is_iv = fields.items[0] == str(OUT.REQ_CALC_IMPLIED_VOLAT)
        req = requests.req_option_computation(fields)
        if is_option_query(req.contract):
            options = self.market.options.lookup(req.contract)
            if len(options) != 1:
                conn.send_error(req.req_id, errors.NO_SECURITY_DEFINITION,
                                "No security definition has been found for the request")
                return
            conn.send(self._computation(req, options[0], is_iv))
            return
        found = self.market.lookup(req.contract)
        if len(found) != 1:
            conn.send_error(req.req_id, errors.NO_SECURITY_DEFINITION,
                            "No security definition has been found for the request")
            return
        conn.send_error(req.req_id, errors.VALIDATION_ERROR,
                        f"Error validating request.-'bO' : cause - Option computations need an option "
                        f"contract; {found[0].symbol} is {found[0].sec_type}.")


    def _computation(self, req: requests.OptionComputationRequest, details: ContractDetails, is_iv: bool) -> bytes:
        c, now = details.contract, self.market.now()
        und = req.under_price
        if not und or und <= 0 or und >= UNSET_DOUBLE / 2:
            underlying = self.market.by_con_id(details.underConId)
            assert underlying is not None
            und = self.market.quote(underlying, now).mid
        t = years_to_expiry(details, now)
        r, q = carry_of(details)
        vol = implied_vol(c.right, req.value, und, c.strike, t, r, q) if is_iv else req.value
        if vol is None or vol <= 0:
            return messages.tick_option_computation(req.req_id, CUSTOM_COMPUTATION, None, None, req.value, 0.0,
                                                    None, None, None, und)
        price, delta, gamma, vega, theta = black_scholes(c.right, und, c.strike, t, vol, r, q)
        pv_dividend = 0.0 if spec_of(details).black76 else und * (1 - math.exp(-q * t))
        return messages.tick_option_computation(req.req_id, CUSTOM_COMPUTATION, vol, delta,
                                                req.value if is_iv else price, pv_dividend, gamma, vega, theta, und)


def _accept_silently(conn: ClientConnection, fields: wire.Fields) -> None:
    """Cancels and settings TWS takes without an answer."""


# --- symbol search ----------------------------------------------------------------------------------
def matching_symbols(instruments: list[Instrument], pattern: str) -> list[ContractDescription]:
    """IB's symbol search over the paper universe: case-insensitive, symbols that start with the
    pattern first (an exact symbol first of all, then shorter symbols), then instruments whose
    description (longName) contains it; at most 16. Futures are listed once, as their underlying
    index with derivative secType FUT, as IB does. An empty pattern matches nothing."""
    text = pattern.strip().upper()
    if not text:
        return []
    scored: list[tuple[tuple, ContractDescription]] = []
    seen: set[tuple[str, str]] = set()
    for inst in instruments:
        desc = _description(inst)
        c = desc.contract
        key = (c.symbol, c.secType)
        if key in seen:
            continue
        symbol, local, name = c.symbol.upper(), inst.contract.localSymbol.upper(), c.description.upper()
        if symbol == text or local == text:
            rank = 0
        elif symbol.startswith(text) or local.startswith(text):
            rank = 1
        elif text in name:
            rank = 2
        else:
            continue
        seen.add(key)
        scored.append(((rank, len(symbol), symbol), desc))
    scored.sort(key=lambda pair: pair[0])
    return [desc for _, desc in scored[:MAX_SYMBOL_SAMPLES]]


def _description(inst: Instrument) -> ContractDescription:
    d, c = ContractDescription(), inst.contract
    if c.secType == "FUT":
        d.contract.conId, d.contract.symbol, d.contract.secType = inst.details.underConId, c.symbol, "IND"
        d.contract.primaryExchange, d.derivativeSecTypes = c.exchange, ["FUT"]
    else:
        d.contract.conId, d.contract.symbol, d.contract.secType = c.conId, c.symbol, c.secType
        d.contract.primaryExchange, d.derivativeSecTypes = c.primaryExchange or c.exchange, []
    d.contract.currency = c.currency
    d.contract.description = inst.details.longName
    d.contract.issuerId = ""
    return d


def market_rules(instruments: list[Instrument]) -> dict[int, tuple[tuple[float, float], ...]]:
    """Every market rule id the universe's contract details name (``marketRuleIds``), each a single
    price band from 0 with the instrument's minTick as increment (the paper market has one tick per
    instrument at every price), and the option classes' rules (``options.market_rules``)."""
    rules: dict[int, tuple[tuple[float, float], ...]] = dict(option_market_rules())
    for inst in instruments:
        for rule in {r for r in (inst.details.marketRuleIds or "").split(",") if r.strip()}:
            rules.setdefault(int(rule), ((0.0, float(inst.min_tick)),))
    return rules


# --- scanners ---------------------------------------------------------------------------------------
def scan_problem(req: requests.ScannerSubscriptionRequest) -> str:
    """Why a scan cannot run ("" when it can), in TWS's words where they are known."""
    if req.scan_code not in SCAN_CODES:
        return f"Scanner type with code {req.scan_code} is not supported."
    if req.instrument not in ("STK", ""):
        return f"Scanner instrument {req.instrument} is not supported."
    if req.location_code not in SCAN_LOCATIONS:
        return "Error: Market Scanner is not configured for one of the chosen locations."
    return ""


def run_scan(market: Market, req: requests.ScannerSubscriptionRequest) -> list[tuple[int, ContractDetails]]:
    """Rank the universe's stocks by the scan code from the current paper quotes.

    TOP_PERC_GAIN / TOP_PERC_LOSE: change of the last price against the previous close (only gainers /
    losers); MOST_ACTIVE: today's volume; HOT_BY_VOLUME: today's volume relative to the stock's usual
    volume (its feed's volume factor). abovePrice, belowPrice and aboveVolume filter first; rows are
    ranked from 0, at most numberOfRows (50 at most)."""
    exchanges = SCAN_LOCATIONS[req.location_code][1]
    # every location here is a US one: a non-USD stock (SAP on Xetra) is never in it
    stocks = [i for i in market.instruments if i.sec_type == "STK" and i.contract.currency == "USD"
              and (not exchanges or i.contract.primaryExchange in exchanges)]
    quotes = market.quotes(stocks)
    scored: list[tuple[float, str, Instrument]] = []
    for inst, q in zip(stocks, quotes):
        last, volume = q.last, q.volume or 0.0
        if last is None or not q.close:
            continue
        if req.above_price != UNSET_DOUBLE and not last > req.above_price:
            continue
        if req.below_price != UNSET_DOUBLE and not last < req.below_price:
            continue
        if req.above_volume not in (UNSET_INTEGER, -1) and not volume > req.above_volume:
            continue
        change = (last - q.close) / q.close
        if req.scan_code == "TOP_PERC_GAIN":
            if change <= 0:
                continue
            score = change
        elif req.scan_code == "TOP_PERC_LOSE":
            if change >= 0:
                continue
            score = -change
        elif req.scan_code == "MOST_ACTIVE":
            score = volume
        else:
            score = volume / (inst.feed.volume_factor or 1.0)
        scored.append((score, inst.symbol, inst))
    scored.sort(key=lambda row: (-row[0], row[1]))
    limit = MAX_SCAN_ROWS if req.number_of_rows in (-1, UNSET_INTEGER) or req.number_of_rows <= 0 \
        else min(req.number_of_rows, MAX_SCAN_ROWS)
    return [(rank, _scan_row(inst)) for rank, (_, _, inst) in enumerate(scored[:limit])]


def _scan_row(inst: Instrument) -> ContractDetails:
    d = ContractDetails()
    d.contract = copy.copy(inst.contract)
    d.contract.exchange = "SMART"
    d.marketName = inst.details.marketName
    return d


def scanner_parameters_xml() -> str:
    """The scanner parameters document in IB's shape (``ScanParameterResponse`` with InstrumentList,
    LocationTree, ScanTypeList and FilterList), listing only what the gateway runs."""
    root = ET.Element("ScanParameterResponse")
    instruments = ET.SubElement(root, "InstrumentList", varName="instrumentList")
    inst = ET.SubElement(instruments, "Instrument")
    _text(inst, name="US Stocks", type="STK", filters="PRICE,VOLUME", group="STK.GLOBAL", shortName="US")
    tree = ET.SubElement(root, "LocationTree", varName="locationTree")
    us = ET.SubElement(tree, "Location")
    _text(us, displayName="US Stocks", locationCode="STK.US", instruments="STK", routeExchange="SMART",
          delayedOnly="false", access="true")
    children = ET.SubElement(us, "LocationTree")
    for code, (name, _) in SCAN_LOCATIONS.items():
        if code == "STK.US":
            continue
        loc = ET.SubElement(children, "Location")
        _text(loc, displayName=name, locationCode=code, instruments="STK", routeExchange="SMART",
              delayedOnly="false", access="true")
    scans = ET.SubElement(root, "ScanTypeList", varName="scanTypeList")
    for code, name in SCAN_CODES.items():
        scan = ET.SubElement(scans, "ScanType")
        _text(scan, displayName=name, scanCode=code, instruments="STK", absoluteColumns="false",
              supportsSorting="true", respSizeLimit=str(MAX_SCAN_ROWS), snapshotSizeLimit=str(MAX_SCAN_ROWS),
              searchDefault="false", access="unrestricted")
    filters = ET.SubElement(root, "FilterList", varName="filterList")
    for filter_id, category, fields in (("PRICE", "Price", ("priceAbove", "priceBelow")),
                                        ("VOLUME", "Volume", ("volumeAbove",))):
        flt = ET.SubElement(filters, "RangeFilter")
        _text(flt, id=filter_id, category=category, access="unrestricted")
        abstract = ET.SubElement(flt, "AbstractField")
        for code in fields:
            _text(ET.SubElement(abstract, "AbstractField"), code=code, displayName=code, type="DoubleField")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def _text(parent: ET.Element, **children: str) -> None:
    for tag, value in children.items():
        ET.SubElement(parent, tag).text = value


# --- continuous futures -----------------------------------------------------------------------------
def continuous_future_details(market: Market, contract: Contract) -> list[ContractDetails] | None:
    """reqContractDetails for secType CONTFUT: the front month's details with secType CONTFUT, as IB
    answers (the front month's conId, expiry and localSymbol). None when the request is not CONTFUT;
    an empty list when no future matches."""
    if (contract.secType or "").strip().upper() != "CONTFUT":
        return None
    query = copy.copy(contract)
    query.secType, query.lastTradeDateOrContractMonth, query.conId = "FUT", "", 0
    futures = sorted(market.lookup(query), key=lambda i: i.contract.lastTradeDateOrContractMonth)
    if not futures:
        return []
    front = copy.deepcopy(futures[0].details)
    front.contract.secType = "CONTFUT"
    return [front]


__all__ = ["ReferenceService", "Refusal", "REFUSALS", "SILENT", "SCAN_CODES", "SCAN_LOCATIONS",
           "MAX_SYMBOL_SAMPLES", "MAX_SCAN_ROWS", "request_name", "matching_symbols", "market_rules",
           "scan_problem", "run_scan", "scanner_parameters_xml", "continuous_future_details"]
