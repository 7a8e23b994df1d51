"""Test helpers that read the paper gateway from the outside: messages counted where they arrive, and
AAPL's option listing as a plain ibapi client receives it."""

from __future__ import annotations

import collections

from .ibclient import IBTestClient


def count_messages(gateway, names: dict[int, str]) -> collections.Counter:
    """Count the messages with these ids (id -> name) as the gateway's server receives them
    (instrumentation of the real handlers, not a mock). Returns the live Counter."""
    counts: collections.Counter = collections.Counter()

    def install(server):
        for msg_id, name in names.items():
            inner = server._handlers[msg_id]

            def counted(conn, fields, inner=inner, name=name):
                counts[name] += 1
                return inner(conn, fields)
            server._handlers[msg_id] = counted

    gateway.call(install)
    return counts


def aapl_listing(port: int, client_id: int) -> tuple[list[str], list[float]]:
    """(expiries, strikes) of the SMART row of reqSecDefOptParams for AAPL, sorted, over a plain ibapi
    connection."""
    ib = IBTestClient().start(port, client_id)
    try:
        rid, start = ib.next_req(), ib.mark()
        ib.reqSecDefOptParams(rid, "AAPL", "", "STK", 265598)
        rows = [e.args for e in ib.collect("securityDefinitionOptionParameter",
                                           "securityDefinitionOptionParameterEnd", rid, start=start)]
    finally:
        ib.stop()
    smart = next(r for r in rows if r[1] == "SMART")
    return sorted(smart[5]), sorted(smart[6])


def stock_mid(gw, symbol: str = "AAPL") -> float:
    """The stock's mid at the gateway now, read from its market model."""
    return gw.call(lambda s: s.market.quote(next(i for i in s.market.instruments
                                                 if i.symbol == symbol and i.sec_type == "STK")).mid)
