"""Tick types and market data types of reqMktData, named by what they carry.

Tick type ids are ibapi's (``ibapi.ticktype.TickTypeEnum``); the live ones (0-14, 45) and their
delayed twins (66-76, 88) map onto the same quote fields. Market data types are what
``reqMarketDataType`` asks for and ``marketDataType`` reports.
"""

from __future__ import annotations

from ibapi.ticktype import TickTypeEnum as T

from .unset import UNSET_DOUBLE

__all__ = ["LIVE", "FROZEN", "DELAYED", "DELAYED_FROZEN", "MARKET_DATA_TYPES", "MARKET_DATA_TYPE_CODES",
           "DELAYED_TYPES", "PRICE_TICKS", "SIZE_TICKS", "TIME_TICKS", "LIVE_TICKS", "DELAYED_TICKS",
           "SIZE_TICK_OF", "DATA_TYPE_OF_PRICE_TICK", "TICK_BY_TICK_TYPES", "OPTION_COMPUTATION_TICKS",
           "OPTION_VALUES", "OPTION_FIELDS", "option_fields", "OPEN_INTEREST_TICKS"]

# --- market data types ----------------------------------------------------------------------------
LIVE, FROZEN, DELAYED, DELAYED_FROZEN = 1, 2, 3, 4
#: code -> name: 1 live, 2 frozen (the last values while the market is closed), 3 delayed (15-20
#: minutes late, free), 4 delayed-frozen.
MARKET_DATA_TYPES = {LIVE: "live", FROZEN: "frozen", DELAYED: "delayed", DELAYED_FROZEN: "delayed-frozen"}
MARKET_DATA_TYPE_CODES = {name: code for code, name in MARKET_DATA_TYPES.items()}
DELAYED_TYPES = frozenset({DELAYED, DELAYED_FROZEN})

# --- tick type -> quote field ---------------------------------------------------------------------
PRICE_TICKS = {T.BID: "bid", T.ASK: "ask", T.LAST: "last", T.HIGH: "high", T.LOW: "low", T.CLOSE: "close",
               T.OPEN: "open",
               T.DELAYED_BID: "bid", T.DELAYED_ASK: "ask", T.DELAYED_LAST: "last", T.DELAYED_HIGH: "high",
               T.DELAYED_LOW: "low", T.DELAYED_CLOSE: "close", T.DELAYED_OPEN: "open"}
# An option's open interest: IB sends the call's as tick 27 and the put's as 28 (generic tick 101).
OPEN_INTEREST_TICKS = {T.OPTION_CALL_OPEN_INTEREST: "open_interest", T.OPTION_PUT_OPEN_INTEREST: "open_interest"}
SIZE_TICKS = {T.BID_SIZE: "bid_size", T.ASK_SIZE: "ask_size", T.LAST_SIZE: "last_size", T.VOLUME: "volume",
              T.DELAYED_BID_SIZE: "bid_size", T.DELAYED_ASK_SIZE: "ask_size", T.DELAYED_LAST_SIZE: "last_size",
              T.DELAYED_VOLUME: "volume", **OPEN_INTEREST_TICKS}
TIME_TICKS = {T.LAST_TIMESTAMP: "last_time", T.DELAYED_LAST_TIMESTAMP: "last_time"}

# --- quote field -> tick type, as a gateway sends them ----------------------------------------------
#: bid/ask/last: (price tick, size tick); the others: one tick.
LIVE_TICKS = {"bid": (T.BID, T.BID_SIZE), "ask": (T.ASK, T.ASK_SIZE), "last": (T.LAST, T.LAST_SIZE),
              "high": T.HIGH, "low": T.LOW, "close": T.CLOSE, "open": T.OPEN, "volume": T.VOLUME,
              "last_time": T.LAST_TIMESTAMP}
DELAYED_TICKS = {"bid": (T.DELAYED_BID, T.DELAYED_BID_SIZE), "ask": (T.DELAYED_ASK, T.DELAYED_ASK_SIZE),
                 "last": (T.DELAYED_LAST, T.DELAYED_LAST_SIZE), "high": T.DELAYED_HIGH, "low": T.DELAYED_LOW,
                 "close": T.DELAYED_CLOSE, "open": T.DELAYED_OPEN, "volume": T.DELAYED_VOLUME,
                 "last_time": T.DELAYED_LAST_TIMESTAMP}

#: ibapi's processTickPriceMsg: the size tick that follows a price tick (BID -> BID_SIZE, ...).
SIZE_TICK_OF = {T.BID: T.BID_SIZE, T.ASK: T.ASK_SIZE, T.LAST: T.LAST_SIZE, T.DELAYED_BID: T.DELAYED_BID_SIZE,
                T.DELAYED_ASK: T.DELAYED_ASK_SIZE, T.DELAYED_LAST: T.DELAYED_LAST_SIZE}

#: The market data type a price tick implies (live bid/ask/last/close, or their delayed twins).
DATA_TYPE_OF_PRICE_TICK = {T.BID: LIVE, T.ASK: LIVE, T.LAST: LIVE, T.CLOSE: LIVE, T.DELAYED_BID: DELAYED,
                           T.DELAYED_ASK: DELAYED, T.DELAYED_LAST: DELAYED, T.DELAYED_CLOSE: DELAYED}

#: reqTickByTickData's tickType -> the type id of the TICK_BY_TICK message that answers it.
TICK_BY_TICK_TYPES = {"Last": 1, "AllLast": 2, "BidAsk": 3, "MidPoint": 4}

# --- tickOptionComputation -------------------------------------------------------------------------------
#: tickOptionComputation's tick type -> the prefix of the quote fields it fills: the model's (13, delayed 83)
#: are the plain fields (iv, delta, ...), the bid's (10, 80) and the ask's (11, 81) "bid_" / "ask_" ones.
#: The last trade's (12, 82) fill nothing.
OPTION_COMPUTATION_TICKS = {T.MODEL_OPTION: "", T.DELAYED_MODEL_OPTION: "", T.BID_OPTION_COMPUTATION: "bid_",
                            T.ASK_OPTION_COMPUTATION: "ask_", T.DELAYED_BID_OPTION: "bid_",
                            T.DELAYED_ASK_OPTION: "ask_"}
#: tickOptionComputation's values (after reqId, tickType, tickAttrib), in order -> (quote field, IB's
#: "not computed" value). IB sends -1 for a volatility or price it has not computed, -2 for a greek
#: (delta may be -1: a deep in-the-money put); ibapi turns some of them into None, not all.
OPTION_VALUES = (("iv", -1.0), ("delta", -2.0), ("model_price", -1.0), (None, -1.0), ("gamma", -2.0),
                 ("vega", -2.0), ("theta", -2.0), ("und_price", -1.0))
_GREEKS = ("iv", "delta", "gamma", "vega", "theta")
#: Every quote field an option computation can fill: the model's, then the bid's and the ask's greeks.
OPTION_FIELDS = (("iv", "delta", "gamma", "vega", "theta", "und_price", "model_price")
                 + tuple(f"bid_{g}" for g in _GREEKS) + tuple(f"ask_{g}" for g in _GREEKS))


def option_fields(tick_type: int, values: tuple) -> dict | None:
    """The quote fields of one tickOptionComputation: ``values`` = (impliedVol, delta, optPrice,
    pvDividend, gamma, vega, theta, undPrice) as ibapi passes them. IB's unset values (-1, -2,
    UNSET_DOUBLE, NaN, None) become None. The bid's and ask's computations give their greeks only
    (their optPrice is the bid or ask itself; the underlying price comes with every one).
    None for tick types that fill no field (12, 82, 53)."""
    prefix = OPTION_COMPUTATION_TICKS.get(tick_type)
    if prefix is None:
        return None
    out = {}
    for (name, unset), v in zip(OPTION_VALUES, values):
        if name is None or (prefix and name not in _GREEKS and name != "und_price"):
            continue
        if v is not None and (v == unset or v != v or abs(v) >= UNSET_DOUBLE or (name == "iv" and v < 0)):
            v = None
        if name == "und_price":
            if v is None:
                continue                   # a computation without it keeps the last underlying price
            out[name] = v
        else:
            out[prefix + name] = v
    return out
