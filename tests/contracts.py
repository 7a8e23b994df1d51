"""ibapi Contract builders for tests (the product's own cell grammar lives in addin.ib.contracts)."""

from dataclasses import dataclass

from ibapi.contract import Contract


def contract(symbol, sec_type="STK", exchange="SMART", currency="USD", **extra) -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, sec_type, exchange, currency
    for k, v in extra.items():
        setattr(c, k, v)
    return c


def stock(symbol):
    return contract(symbol)


def eurusd():
    return contract("EUR", "CASH", "IDEALPRO", "USD")


def btc():
    return contract("BTC", "CRYPTO", "PAXOS", "USD")


def es(month: str = "202612"):
    """An ES future of a given contract month (pure grammar tests; against a gateway use listed_es)."""
    return contract("ES", "FUT", "CME", "USD", lastTradeDateOrContractMonth=month)


@dataclass(frozen=True)
class ListedFuture:
    """One ES contract as the paper gateway lists it today (never a hard-coded month)."""

    con_id: int
    local_symbol: str       # ESZ6
    last_trade_date: str    # YYYYMMDD

    @property
    def text(self) -> str:
        """The cell text a trader types for it (and the grammar writes back): ESZ6.CME."""
        return f"{self.local_symbol}.CME"

    def contract(self) -> Contract:
        return contract("ES", "FUT", "CME", "USD", lastTradeDateOrContractMonth=self.last_trade_date[:6])


def listed_es(gateway) -> list[ListedFuture]:
    """The ES contracts a running PaperGateway lists at its own "now", front month first."""
    return sorted((ListedFuture(i.con_id, i.contract.localSymbol, i.contract.lastTradeDateOrContractMonth)
                   for i in gateway.call(lambda s: s.market.instruments) if i.sec_type == "FUT"),
                  key=lambda f: f.last_trade_date)


def spx():
    return contract("SPX", "IND", "CBOE", "USD")
