"""Wire layouts of the historical answers the paper gateway added for issue 14: HISTORICAL_SCHEDULE
(whatToShow=SCHEDULE), HISTORICAL_TICKS / _BID_ASK / _LAST, and the REQ_HISTORICAL_TICKS request.

Each layout is the reverse of ibapi's decoder at server version 178 (``processHistoricalSchedule``,
``processHistoricalTicks``, ``processHistoricalTicksBidAsk``, ``processHistoricalTicksLast``) and of
``EClient.reqHistoricalTicks``. Times of ticks are epoch seconds (int); schedule times are IB's
``yyyymmdd-hh:mm:ss`` in the instrument's zone, ref dates ``yyyymmdd``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ibapi.contract import Contract

from ...protocol.messages import IN
from .messages import _float, _int, _size
from .requests import _contract
from .wire import Fields, frame


@dataclass(frozen=True)
class HistoricalTicksRequest:
    req_id: int
    contract: Contract
    start: str
    end: str
    number_of_ticks: int
    what_to_show: str
    use_rth: int
    ignore_size: bool


def req_historical_ticks(fields: Fields) -> HistoricalTicksRequest:
    """REQ_HISTORICAL_TICKS (96): reqId, the contract block, includeExpired, startDateTime,
    endDateTime, numberOfTicks, whatToShow, useRth, ignoreSize, miscOptions (no version field)."""
    req_id = fields.next_int("reqId")
    contract = _contract(fields)
    contract.includeExpired = fields.next_bool("includeExpired")
    start = fields.next_str("startDateTime")
    end = fields.next_str("endDateTime")
    count = fields.next_int("numberOfTicks", default=0)
    what = fields.next_str("whatToShow")
    use_rth = fields.next_int("useRth", default=0)
    ignore_size = fields.next_bool("ignoreSize")
    if fields.remaining():
        fields.next_str("miscOptions")
    return HistoricalTicksRequest(req_id, contract, start, end, count, what, use_rth, ignore_size)


def historical_schedule(req_id: int, start: str, end: str, time_zone: str, sessions) -> bytes:
    """HISTORICAL_SCHEDULE (106) -> ``historicalSchedule(reqId, start, end, timeZone, sessions)``.
    sessions: (startDateTime, endDateTime, refDate) texts."""
    sessions = list(sessions)
    fields: list = [IN.HISTORICAL_SCHEDULE, _int(req_id), start, end, time_zone, len(sessions)]
    for s0, s1, ref in sessions:
        fields += [s0, s1, ref]
    return frame(*fields)


def historical_ticks(req_id: int, ticks, done: bool = True) -> bytes:
    """HISTORICAL_TICKS (96), MIDPOINT -> ``historicalTicks``. ticks: (epoch, price, size)."""
    ticks = list(ticks)
    fields: list = [IN.HISTORICAL_TICKS, _int(req_id), len(ticks)]
    for t, price, size in ticks:
        fields += [_int(t), "", _float(price), _size(size)]      # the empty field: ibapi skips it
    return frame(*fields, int(done))


def historical_ticks_bid_ask(req_id: int, ticks, done: bool = True) -> bytes:
    """HISTORICAL_TICKS_BID_ASK (97) -> ``historicalTicksBidAsk``.
    ticks: (epoch, mask, bid, ask, bid size, ask size); mask bit 1 askPastHigh, 2 bidPastLow."""
    ticks = list(ticks)
    fields: list = [IN.HISTORICAL_TICKS_BID_ASK, _int(req_id), len(ticks)]
    for t, mask, bid, ask, bid_size, ask_size in ticks:
        fields += [_int(t), _int(mask), _float(bid), _float(ask), _size(bid_size), _size(ask_size)]
    return frame(*fields, int(done))


def historical_ticks_last(req_id: int, ticks, done: bool = True) -> bytes:
    """HISTORICAL_TICKS_LAST (98) -> ``historicalTicksLast``.
    ticks: (epoch, mask, price, size, exchange, specialConditions); mask bit 1 pastLimit, 2 unreported."""
    ticks = list(ticks)
    fields: list = [IN.HISTORICAL_TICKS_LAST, _int(req_id), len(ticks)]
    for t, mask, price, size, exchange, special in ticks:
        fields += [_int(t), _int(mask), _float(price), _size(size), exchange, special]
    return frame(*fields, int(done))
