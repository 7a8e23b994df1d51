"""IB's error codes, named by what they mean, and the sets of codes that are handled alike.

IB sends every error, warning and notice through one callback (``error(reqId, time, code, text)``):
requests that failed, orders IB rejected, the state of its connection to IB's servers, and mere
information. The client (addin.ib, addin.market, ...) decides by these sets what a code does to a
request; the paper gateway sends the same codes with IB's texts. Codes 502/504 are ibapi's own
(``ibapi.errors``), raised on the client side.
"""

from __future__ import annotations

from ibapi import errors as ibapi_errors

# --- the connection -------------------------------------------------------------------------------
CONNECT_FAILED = ibapi_errors.CONNECT_FAIL.code()   # 502: nothing answered the API handshake
NOT_CONNECTED = ibapi_errors.NOT_CONNECTED.code()   # 504: no connection (a request was not sent)
#: Errors that end a connection attempt while it is being made.
CONNECT_FAILURES = frozenset({CONNECT_FAILED, NOT_CONNECTED})
CLIENT_ID_IN_USE = 326                              # another program holds this clientId

# TWS's connection to IB's servers (sent with reqId -1).
CONNECTIVITY_LOST = 1100                            # lines go stale, TWS keeps trying
RESTORED_DATA_LOST = 1101                           # back, but market data lines are gone: re-request
RESTORED_DATA_KEPT = 1102                           # back, every subscription kept
CONNECTIVITY = frozenset({CONNECTIVITY_LOST, RESTORED_DATA_LOST, RESTORED_DATA_KEPT})
#: Connectivity codes after which market data lines are not streaming (until the next tick).
DATA_INTERRUPTED = frozenset({CONNECTIVITY_LOST, RESTORED_DATA_LOST})

# --- notices and warnings (not failures) -----------------------------------------------------------
MARKET_DATA_FARM_OK = 2104                          # "Market data farm connection is OK:usfarm"
HMDS_FARM_OK = 2106                                 # "HMDS data farm connection is OK:ushmds"
SEC_DEF_FARM_OK = 2158                              # "Sec-def data farm connection is OK:secdefnj"
#: The farm notices TWS sends after START_API.
FARM_OK = (MARKET_DATA_FARM_OK, HMDS_FARM_OK, SEC_DEF_FARM_OK)
#: 2100-2199: warnings and farm notices (2103-2110, 2157, 2158: a data farm went down or came back).
WARNING_RANGE = range(2100, 2200)
DELAYED_DATA_NOTICE = 10167       # "Requested market data is not subscribed. Displaying delayed market data."
COMPETING_SESSION = 10197         # "No market data during competing live session"
IMPLIED_TIME_ZONE = 2174          # an endDateTime without a zone (deprecated form), answered anyway
#: Codes outside 2100-2199 that inform about a request rather than fail it.
WARNING_CODES = frozenset({DELAYED_DATA_NOTICE, IMPLIED_TIME_ZONE, 2176, 2109, 399, COMPETING_SESSION, 2150,
                           2137, 321_000})


def is_warning(code: int) -> bool:
    """Farm notices and warnings: for the log and the status, not a request's failure."""
    return code in WARNING_RANGE or code in WARNING_CODES


# --- requests -------------------------------------------------------------------------------------
NO_ANSWER = 0                     # ours, not IB's: no answer within the request's timeout
MAX_RATE_EXCEEDED = 100           # more than 50 messages per second (also: too many API clients)
MAX_TICKERS = 101                 # "Max number of tickers has been reached": the market data lines
HISTORICAL_DATA_ERROR = 162       # "Historical Market Data Service error message:..." (incl. pacing)
NO_SECURITY_DEFINITION = 200      # no such contract, or an ambiguous one
NO_SUCH_TICKER = 300              # "Can't find EId with tickerId": cancel of an unknown line
MAX_DEPTH_REQUESTS = 309          # "Max number (3) of market depth requests has been reached"
REQUEST_READ_ERROR = 320          # "Error reading request": a malformed message
VALIDATION_ERROR = 321            # "Error validating request" (e.g. an unknown account)
PROCESSING_ERROR = 322            # "Error processing request" (e.g. a duplicate ticker id)
NOT_SUBSCRIBED = 354              # no market data subscription
PART_NOT_SUBSCRIBED = 10090       # part of the requested market data is not subscribed
TICK_BY_TICK_FAILED = 10189       # "Failed to request tick-by-tick data"
DEPTH_NOT_SUPPORTED = 10092       # "Deep market data is not supported for this combination of security type/exchange"
#: Market data errors after which the same request may succeed later.
MARKET_DATA_RETRYABLE = frozenset({NO_ANSWER, MAX_RATE_EXCEEDED, MAX_TICKERS, NOT_CONNECTED,
                                   CONNECTIVITY_LOST, PART_NOT_SUBSCRIBED, COMPETING_SESSION})

# --- orders ---------------------------------------------------------------------------------------
DUPLICATE_ORDER_ID = 103
MODIFY_FILLED = 104               # "Can't modify a filled order."
MODIFY_MISMATCH = 105             # "Order being modified does not match original order."
PRICE_OFF_TICK = 110              # the price does not conform to the minimum price variation
TIF_TYPE_MISMATCH = 111           # "The time in force (tif type) and the order type are incompatible."
AUCTION_TIF_NOT_DAY = 113         # "The Tif option should be set to DAY for MOC and LOC orders."
NOT_CANCELLABLE = 161             # "Cancel attempted when order is not in a cancellable state"
ORDER_REJECTED = 201              # "Order rejected - reason:..."
ORDER_CANCELLED = 202             # "Order Canceled - reason:..." (also after the trader's own cancel)
AUTO_BIND_NOT_ALLOWED = 327       # reqAutoOpenOrders from a clientId other than 0
UNSUPPORTED_ORDER_TYPE = 387      # "Unsupported order type for this exchange and security type."
CANCEL_UNKNOWN_ORDER = 10147      # "OrderId ... that needs to be cancelled is not found."
ORDER_NOT_MODIFIABLE = 10148      # "OrderId ... can not be cancelled, state: ..."; the paper gateway also
                                  # answers a modify of a cancelled order with it (its own wording)
