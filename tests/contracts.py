"""ibapi Contract builders for tests (the product's own cell grammar lives in addin.ib.contracts)."""

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


def es():
    return contract("ES", "FUT", "CME", "USD", lastTradeDateOrContractMonth="202612")


def spx():
    return contract("SPX", "IND", "CBOE", "USD")
