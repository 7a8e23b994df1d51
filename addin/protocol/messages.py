"""TWS API message ids by name: ``IN`` (TWS -> client: ``IN.TICK_PRICE`` = 1, ...) and ``OUT``
(client -> TWS: ``OUT.REQ_MKT_DATA`` = 1, ...), exactly ``ibapi.message``'s, so both sides name a
message the way ibapi's ``EClient`` and ``Decoder`` do."""

from ibapi.message import IN, OUT

__all__ = ["IN", "OUT"]
