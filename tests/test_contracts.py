"""The cell grammar (parse, format, round trip) and qualification through a real Session against the
paper gateway. No mocks of the IB side: requests are counted at the gateway itself."""

from __future__ import annotations

import pickle
import threading
from datetime import date, datetime, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from ibapi.contract import Contract, ContractDetails

from addin.cells import ERROR_VALUES
from addin.ib.contracts import FIAT, FUTURES_EXCHANGES, ContractBook, InstrumentError, Spec, format_contract, parse
from addin.ib.session import IBError, RequestTimeout, Session
from addin.paper import PaperGateway

from . import contracts as tc


def digit_year(digit: int) -> int:
    """The grammar's rule, written out independently: the first year from last year on ending in digit."""
    y = date.today().year - 1
    while y % 10 != digit:
        y += 1
    return y


ESZ26 = "ESZ6.CME" if digit_year(6) == 2026 else "ESZ26.CME"     # how December 2026 is written today


# --- the grammar ------------------------------------------------------------------------------------
GRAMMAR = [
    # text, canonical, (sec_type, symbol, exchange, primary, currency, last_trade_date, strike, right, mult, conId)
    ("AAPL", "AAPL", ("STK", "AAPL", "SMART", "", "USD", "", 0.0, "", "", 0)),
    ("  aapl ", "AAPL", ("STK", "AAPL", "SMART", "", "USD", "", 0.0, "", "", 0)),
    ("AAPL.NASDAQ", "AAPL.NASDAQ", ("STK", "AAPL", "SMART", "NASDAQ", "USD", "", 0.0, "", "", 0)),
    ("aapl . nasdaq", "AAPL.NASDAQ", ("STK", "AAPL", "SMART", "NASDAQ", "USD", "", 0.0, "", "", 0)),
    ("AAPL.SMART", "AAPL", ("STK", "AAPL", "SMART", "", "USD", "", 0.0, "", "", 0)),
    ("VOD.LSE@GBP", "VOD.LSE@GBP", ("STK", "VOD", "SMART", "LSE", "GBP", "", 0.0, "", "", 0)),
    ("AAPL@USD", "AAPL", ("STK", "AAPL", "SMART", "", "USD", "", 0.0, "", "", 0)),
    ("BRK.B", "BRK.B", ("STK", "BRK B", "SMART", "", "USD", "", 0.0, "", "", 0)),
    ("brk  b", "BRK.B", ("STK", "BRK B", "SMART", "", "USD", "", 0.0, "", "", 0)),
    ("BRK.B.NYSE", "BRK.B.NYSE", ("STK", "BRK B", "SMART", "NYSE", "USD", "", 0.0, "", "", 0)),
    ("700.SEHK@HKD", "700.SEHK@HKD", ("STK", "700", "SMART", "SEHK", "HKD", "", 0.0, "", "", 0)),
    ("EUR/USD", "EUR/USD", ("CASH", "EUR", "IDEALPRO", "", "USD", "", 0.0, "", "", 0)),
    ("eur.usd", "EUR/USD", ("CASH", "EUR", "IDEALPRO", "", "USD", "", 0.0, "", "", 0)),
    ("EURUSD", "EUR/USD", ("CASH", "EUR", "IDEALPRO", "", "USD", "", 0.0, "", "", 0)),
    ("EUR / USD . IDEALPRO", "EUR/USD", ("CASH", "EUR", "IDEALPRO", "", "USD", "", 0.0, "", "", 0)),
    ("GBP/JPY", "GBP/JPY", ("CASH", "GBP", "IDEALPRO", "", "JPY", "", 0.0, "", "", 0)),
    ("BTC/USD.PAXOS", "BTC/USD.PAXOS", ("CRYPTO", "BTC", "PAXOS", "", "USD", "", 0.0, "", "", 0)),
    ("btc/usd", "BTC/USD", ("CRYPTO", "BTC", "", "", "USD", "", 0.0, "", "", 0)),
    ("ESZ6.CME", "ESZ6.CME", ("FUT", "ES", "CME", "", "USD", f"{digit_year(6)}12", 0.0, "", "", 0)),
    ("ESZ26.CME", ESZ26, ("FUT", "ES", "CME", "", "USD", "202612", 0.0, "", "", 0)),
    ("ES 202612 CME", ESZ26, ("FUT", "ES", "CME", "", "USD", "202612", 0.0, "", "", 0)),
    ("es 20261218 cme", "ES 20261218 CME", ("FUT", "ES", "CME", "", "USD", "20261218", 0.0, "", "", 0)),
    ("esh7", "ESH7", ("FUT", "ES", "", "", "USD", f"{digit_year(7)}03", 0.0, "", "", 0)),
    ("ES.CME", "ES.CME", ("FUT", "ES", "CME", "", "USD", "", 0.0, "", "", 0)),
    ("FDAXZ6.EUREX@EUR", "FDAXZ6.EUREX@EUR", ("FUT", "FDAX", "EUREX", "", "EUR", f"{digit_year(6)}12", 0.0, "", "", 0)),
    ("N225MZ6.OSE.JPN@JPY", "N225MZ6.OSE.JPN@JPY",
     ("FUT", "N225M", "OSE.JPN", "", "JPY", f"{digit_year(6)}12", 0.0, "", "", 0)),
    ("^SPX.CBOE", "^SPX.CBOE", ("IND", "SPX", "CBOE", "", "USD", "", 0.0, "", "", 0)),
    ("^spx", "^SPX", ("IND", "SPX", "", "", "USD", "", 0.0, "", "", 0)),
    ("^DAX.EUREX@EUR", "^DAX.EUREX@EUR", ("IND", "DAX", "EUREX", "", "EUR", "", 0.0, "", "", 0)),
    ("AAPL 20261218 200 C", "AAPL 20261218 200 C",
     ("OPT", "AAPL", "SMART", "", "USD", "20261218", 200.0, "C", "100", 0)),
    ("aapl 20261218 192.50 put", "AAPL 20261218 192.5 P",
     ("OPT", "AAPL", "SMART", "", "USD", "20261218", 192.5, "P", "100", 0)),
    ("AAPL 20261218 200 CALL CBOE x10", "AAPL 20261218 200 C CBOE x10",
     ("OPT", "AAPL", "CBOE", "", "USD", "20261218", 200.0, "C", "10", 0)),
    ("SPX 202612 6000 P CBOE", "SPX 202612 6000 P CBOE",
     ("OPT", "SPX", "CBOE", "", "USD", "202612", 6000.0, "P", "100", 0)),
    ("conid:265598", "conid:265598", ("", "", "", "", "", "", 0.0, "", "", 265598)),
    ("CONID : 265598 . ISLAND", "conid:265598.ISLAND", ("", "", "ISLAND", "", "", "", 0.0, "", "", 265598)),
]
FIELDS = ("sec_type", "symbol", "exchange", "primary_exchange", "currency", "last_trade_date", "strike", "right",
          "multiplier", "con_id")


@pytest.mark.parametrize("text, canonical, fields", GRAMMAR, ids=[g[0] for g in GRAMMAR])
def test_every_grammar_form_parses_formats_and_round_trips(text, canonical, fields):
    spec = parse(text)
    assert tuple(getattr(spec, f) for f in FIELDS) == fields
    assert spec.text == text
    assert spec.canonical == canonical == str(spec)
    assert parse(canonical) == spec
    c = spec.to_contract()
    assert (c.secType, c.symbol, c.exchange, c.primaryExchange, c.currency, c.lastTradeDateOrContractMonth,
            c.conId) == (fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[9])
    if spec.sec_type == "OPT":
        assert (c.strike, c.right, c.multiplier) == fields[6:9]
    assert format_contract(c) == canonical
    assert format_contract(spec) == format_contract(text) == canonical


def test_format_contract_of_plain_contracts_and_details():
    assert format_contract(tc.stock("AAPL")) == "AAPL"
    assert format_contract(tc.eurusd()) == "EUR/USD"
    assert format_contract(tc.btc()) == "BTC/USD.PAXOS"
    assert format_contract(tc.es()) == ESZ26
    assert format_contract(tc.spx()) == "^SPX.CBOE"
    opt = tc.contract("AAPL", "OPT", lastTradeDateOrContractMonth="20261218", strike=200.0, right="CALL",
                      multiplier="100")
    assert format_contract(opt) == "AAPL 20261218 200 C"
    # A qualified future carries its full date; its localSymbol shows the month code names it.
    d = ContractDetails()
    d.contract = tc.es()
    d.contract.lastTradeDateOrContractMonth, d.contract.localSymbol, d.contract.conId = "20261218", "ESZ6", 1
    d.contractMonth = "202612"
    assert format_contract(d) == format_contract(d.contract) == ESZ26
    d.contract.localSymbol = "ES DEC 26"          # no proof the month is enough: keep the date
    assert format_contract(d.contract) == "ES 20261218 CME"


def test_contracts_the_grammar_cannot_write_fall_back_to_the_conid_or_fail_clearly():
    directed = tc.contract("AAPL", "STK", "ISLAND", conId=265598)
    assert format_contract(directed) == "conid:265598.ISLAND"
    lse = tc.contract("BP.", exchange="SMART", primaryExchange="LSE", currency="GBP", conId=1234)
    assert format_contract(lse) == "conid:1234"
    fop = tc.contract("ES", "FOP", "CME", conId=77)
    assert format_contract(fop) == "conid:77.CME"
    looks_like_a_pair = tc.contract("EUR", primaryExchange="USD", conId=9)   # would read as EUR/USD
    assert format_contract(looks_like_a_pair) == "conid:9"
    with pytest.raises(InstrumentError) as err:
        format_contract(tc.contract("ES", "FOP", "CME"))
    assert "secType FOP" in str(err.value) and "conid:N" in str(err.value)
    assert format_contract(tc.contract("", "", "", "", conId=265598)) == "conid:265598"


# --- round trip (hypothesis) ---------------------------------------------------------------------------
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ccy = st.sampled_from(sorted(FIAT))
_stk_symbol = st.tuples(st.text(LETTERS, min_size=1, max_size=5), st.sampled_from(["", "", "", "A", "B"])).map(
    lambda t: f"{t[0]} {t[1]}" if t[1] else t[0])
_primary = st.sampled_from(["", "NASDAQ", "NYSE", "ARCA", "LSE", "IBIS", "TSEJ", "SEHK"])
_month = st.tuples(st.integers(1950, 2150), st.integers(1, 12)).map(lambda t: f"{t[0]:04d}{t[1]:02d}")
_day = st.dates(date(1990, 1, 1), date(2150, 12, 31)).map(lambda d: d.strftime("%Y%m%d"))
_fut_root = st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True)
_strike = st.decimals(min_value="0.001", max_value="99999", places=3).map(float).filter(lambda x: x > 0)
_mult = st.sampled_from(["100", "10", "1000", "5.5"])

stocks = st.builds(lambda s, p, c: Spec("STK", s, "SMART", p, c), _stk_symbol, _primary, _ccy)
numbered = st.builds(lambda n, p, c: Spec("STK", str(n), "SMART", p, c), st.integers(1, 99999),
                     _primary.filter(bool), _ccy)
pairs = st.builds(lambda a, b, x: Spec("CASH", a, x, currency=b), _ccy, _ccy, st.sampled_from(["IDEALPRO", "FXCONV"])
                  ).filter(lambda s: s.symbol != s.currency)
cryptos = st.builds(lambda a, b, x: Spec("CRYPTO", a, x, currency=b),
                    st.sampled_from(["BTC", "ETH", "LTC", "BCH", "SOL"]), _ccy,
                    st.sampled_from(["", "PAXOS", "ZEROHASH"]))
futures = st.builds(lambda r, d, x, c: Spec("FUT", r, x, currency=c, last_trade_date=d), _fut_root,
                    st.one_of(_month, _day), st.sampled_from(["", *sorted(FUTURES_EXCHANGES), "QBALGO"]), _ccy)
undated = st.builds(lambda r, x, c: Spec("FUT", r, x, currency=c), st.from_regex(r"[A-Z]{1,4}", fullmatch=True),
                    st.sampled_from(sorted(FUTURES_EXCHANGES)), _ccy)
indices = st.builds(lambda s, x, c: Spec("IND", s, x, currency=c), st.from_regex(r"[A-Z0-9]{1,8}", fullmatch=True),
                    st.sampled_from(["", "CBOE", "EUREX", "OSE.JPN"]), _ccy)
options = st.builds(lambda s, d, k, r, x, m, c: Spec("OPT", s, x, currency=c, last_trade_date=d, strike=k, right=r,
                                                     multiplier=m),
                    _stk_symbol, st.one_of(_month, _day), _strike, st.sampled_from("CP"),
                    st.sampled_from(["SMART", "CBOE", "BOX"]), _mult, _ccy)
con_ids = st.builds(lambda n, x: Spec("", exchange=x, con_id=n), st.integers(1, 2**31 - 1),
                    st.sampled_from(["", "SMART", "ISLAND", "CME"]))
grammar_specs = st.one_of(stocks, numbered, pairs, cryptos, futures, undated, indices, options, con_ids)


@settings(max_examples=300, deadline=None)
@given(grammar_specs)
def test_round_trip_spec_text_contract(spec):
    # A root+month code+year symbol without a month would read as that month: not a parse result.
    assume(not (spec.sec_type == "FUT" and not spec.last_trade_date and parse(spec.symbol).sec_type == "FUT"))
    text = spec.canonical
    assert parse(text) == spec
    assert parse(text.lower()) == spec
    assert parse("  " + text.replace(".", " . ") + " ") == spec
    assert format_contract(spec.to_contract()) == text
    assert parse(format_contract(spec.to_contract())).to_contract().__dict__ == spec.to_contract().__dict__


@settings(max_examples=300, deadline=None)
@given(st.text("ABCEFSZUX0126 ./@^:#!-", max_size=14))
def test_any_text_is_a_spec_that_round_trips_or_an_instrument_error(text):
    try:
        spec = parse(text)
    except InstrumentError as exc:
        assert exc.text == text and exc.understood and exc.missing and str(exc).startswith(f'"{text[:77]}')
        return
    assert parse(spec.canonical) == spec
    assert parse(spec.canonical).canonical == spec.canonical


# --- errors the user sees --------------------------------------------------------------------------------
ERRORS = [
    # input, words in "understood", words in "missing", candidates
    (None, "nothing (the cell is empty)", "missing an instrument such as AAPL", []),
    ("", "nothing (the text is blank)", "missing an instrument", []),
    ("   ", "nothing (the text is blank)", "missing an instrument", []),
    *[(e, f"the Excel error value {e}", "the cell holds an error", []) for e in sorted(ERROR_VALUES)],
    ("#n/a", "the Excel error value #N/A", "the cell holds an error", []),
    (-2146826246, "the Excel error value #N/A", "the cell holds an error", []),   # #N/A through COM
    (42, "the number 42", "a number is not an instrument", []),
    (3.5, "the number 3.5", "a number is not an instrument", []),
    ("42", "the number 42", "a number is not an instrument", []),
    ("700", "the number 700", "needs its exchange and currency, e.g. 700.SEHK@HKD", []),
    (True, "the logical value TRUE", "a logical value is not an instrument", []),
    ([1, 2], "a value of type list", "missing an instrument", []),
    ("AA!PL", "nothing", "unexpected character '!'", []),
    ("AAPL-B", "nothing", "unexpected character '-'", []),
    ("ÄPL", "nothing", "unexpected character 'Ä'", []),
    ("AAPL 20261218 200", "option AAPL, strike 200, expiry 2026-12-18", "missing the right: C (call) or P (put)",
     ["AAPL 20261218 200 C", "AAPL 20261218 200 P"]),
    ("AAPL 20261218 200 X", "option AAPL, strike 200", "the right must be C, P, CALL or PUT, found 'X'",
     ["AAPL 20261218 200 C", "AAPL 20261218 200 P"]),
    ("AAPL 20261218 0 C", "option AAPL, strike 0", "the strike must be above 0", []),
    ("AAPL 20261218 200 C CBOE NYSE", "option AAPL call, strike 200, expiry 2026-12-18, on CBOE",
     "unexpected 'NYSE'", []),
    ("AAPL 20261318 200 C", "symbol AAPL", "'20261318' is not a date", []),
    ("ES 202613 CME", "symbol ES", "'202613' is not a date", []),
    ("AAPL US EQUITY", "symbol AAPL", "'US' is not a date", []),
    ("ES 202612 CME EXTRA", "future ES, December 2026, on CME, in USD", "unexpected 'EXTRA' after the exchange", []),
    ("EUR/USD@GBP", "currency pair EUR/USD on IDEALPRO", "carries its currency in the second half", ["EUR/USD"]),
    ("EUR/", "pair EUR/?", "missing the second currency", []),
    ("EUR/XYZ", "pair EUR/XYZ", "the second half must be a currency such as USD, found 'XYZ'", []),
    ("USD/USD", "currency USD", "two different currencies", []),
    ("EUR/USD/GBP", "a pair", "one '/'", []),
    ("AAPL@", "instrument AAPL", "missing the currency after @", []),
    ("AAPL@GB", "instrument AAPL", "must be 3 letters such as GBP, found 'GB'", []),
    ("@GBP", "currency GBP", "missing the instrument before @", []),
    ("A@B@C", "nothing", "only one @currency", []),
    ("^SPX.", "index SPX", "missing the exchange after '.'", []),
    ("SP^X", "nothing", "'^' marks an index and must come first", []),
    ("AAPL.", "symbol AAPL", "a '.' must stand between a symbol and an exchange", []),
    ("AAPL..NASDAQ", "symbol AAPL", "a '.' must stand between", []),
    ("AAPL.1X", "symbol AAPL", "'1X' is not an exchange name", []),
    ("conid:", "a contract id", "missing the contract id number", []),
    ("conid:0", "a contract id", "missing the contract id number", []),
    ("conid:265598@USD", "contract id 265598", "no @currency", ["conid:265598"]),
    ("x:1", "nothing", "':' belongs only in conid:N", []),
]


@pytest.mark.parametrize("value, understood, missing, candidates", ERRORS, ids=[repr(e[0]) for e in ERRORS])
def test_every_error_says_what_was_understood_and_what_is_missing(value, understood, missing, candidates):
    with pytest.raises(InstrumentError) as err:
        parse(value)
    e = err.value
    assert isinstance(e, ValueError)
    assert understood in e.understood and missing in e.missing
    assert e.candidates == candidates
    message = str(e)
    assert message.startswith(f'"{e.text}": understood {e.understood}; {e.missing}')
    for c in candidates:
        assert c in message
    again = pickle.loads(pickle.dumps(e))
    assert (str(again), again.candidates) == (message, e.candidates)


def test_a_bare_word_is_a_stock_never_a_guessed_future():
    assert parse("CLF").sec_type == "STK"         # Cleveland-Cliffs, not crude oil January
    assert parse("ESZ").sec_type == "STK"
    assert (parse("ESZ.CME").sec_type, parse("ESZ.CME").symbol) == ("FUT", "ESZ")


# --- qualification against the paper gateway ------------------------------------------------------------
@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, synthetic=3) as gateway:
        seen: list[str] = []

        def install(server):
            handler = server._handlers[9]

            def counting(conn, fields):           # REQ_CONTRACT_DATA: count, then answer as usual
                seen.append("reqContractDetails")
                handler(conn, fields)
            server._handlers[9] = counting

        gateway.call(install)
        gateway.requests = lambda: gateway.call(lambda s: len(seen))
        yield gateway


@pytest.fixture(scope="module")
def session(gw):
    s = Session(port=gw.port, client_id=61, request_timeout=5.0)
    s.connect()
    yield s
    s.disconnect()


@pytest.fixture
def book(session):
    return ContractBook(session)


BUILT_IN = [
    ("AAPL", 265598, "AAPL.NASDAQ"), ("goog", 208813720, "GOOG.NASDAQ"), ("MSFT.NASDAQ", 272093, "MSFT.NASDAQ"),
    ("SPY", 756733, "SPY.ARCA"), ("EUR/USD", 12087792, "EUR/USD"), ("EURUSD", 12087792, "EUR/USD"),
    ("BTC/USD.PAXOS", 479624278, "BTC/USD.PAXOS"), ("BTC/USD", 479624278, "BTC/USD.PAXOS"),
    ("^SPX.CBOE", 416904, "^SPX.CBOE"), ("^SPX", 416904, "^SPX.CBOE"),
    ("SIM0002", 900000002, "SIM0002.NASDAQ"), ("conid:265598", 265598, "AAPL.NASDAQ"),
]


@pytest.mark.parametrize("text, con_id, described", BUILT_IN, ids=[b[0] for b in BUILT_IN])
def test_qualify_each_built_in_instrument(book, text, con_id, described):
    details = book.qualify(text)
    assert details.contract.conId == con_id
    c = book.contract(text)
    assert c.conId == con_id and c.exchange
    assert book.describe(text) == described
    assert book.details_by_con_id(con_id).contract.conId == con_id


@pytest.mark.parametrize("month", [0, 1], ids=["front", "next"])
def test_qualify_each_listed_future_in_every_form(gw, book, month):
    """The ES months the gateway lists today, in each form the grammar has (texts built from the listing)."""
    ltd, local, con_id = listed_es(gw)[month]
    code_year = local[2:]                                            # e.g. Z6
    for text in (f"{local}.CME", f"{local.lower()}", f"ES {ltd[:6]} CME", f"ES {ltd} CME",
                 f"ES{code_year[0]}{ltd[2:4]}", f"ES{code_year[0]}{ltd[2:4]}.CME"):
        assert book.qualify(text).contract.conId == con_id, text
        assert book.describe(text) == f"{local}.CME", text
    assert book.details_by_con_id(con_id).contract.localSymbol == local


def test_every_gateway_instrument_formats_to_a_text_that_qualifies_back(gw, book):
    for details in gw.call(lambda s: [i.details for i in s.market.instruments]):
        text = format_contract(details)
        assert book.qualify(text).contract.conId == details.contract.conId, text
        assert parse(text) == Spec.from_contract(details)


def test_conid_form_and_its_exchange(book):
    assert book.contract("conid:265598").symbol == "AAPL"
    routed = book.contract("conid:265598.ISLAND")
    assert (routed.conId, routed.exchange) == (265598, "ISLAND")
    with pytest.raises(InstrumentError) as err:
        book.qualify("conid:123")
    assert err.value.code == 200 and "contract id 123" in err.value.understood
    with pytest.raises(InstrumentError):
        book.details_by_con_id(0)


def test_unknown_is_ibs_200_with_what_was_understood(book):
    with pytest.raises(InstrumentError) as err:
        book.qualify("foo.nasdaq")
    e = err.value
    assert (e.code, e.text, e.understood) == (200, "foo.nasdaq", "stock FOO on SMART, primary exchange NASDAQ, in USD")
    assert "IB 200: No security definition has been found for the request" in e.missing
    assert e.ib_text == "No security definition has been found for the request"
    assert isinstance(e.__cause__, IBError)


def test_an_option_the_gateway_does_not_list_is_ibs_200_with_what_was_understood(book):
    with pytest.raises(InstrumentError) as err:
        book.qualify("GOOG 20261218 200 C")                 # the paper gateway lists no GOOG options
    assert err.value.code == 200
    assert err.value.understood == "option GOOG call, strike 200, expiry 2026-12-18, on SMART, multiplier 100, in USD"


def test_a_month_code_without_year_suggests_the_digit(book):
    years = {datetime.now(timezone.utc).year % 10}
    with pytest.raises(InstrumentError) as err:
        book.qualify("ESZ.CME")
    years.add(datetime.now(timezone.utc).year % 10)             # this year's digit, whichever side of New Year
    assert "understood future ESZ, no contract month, on CME" in str(err.value)
    assert any(f"if you meant future ES December, missing the year digit (e.g. ESZ{y}.CME)" in str(err.value)
               for y in years)


def listed_es(gw) -> list[tuple[str, str, int]]:
    """(lastTradeDate, localSymbol, conId) of the ES contracts the gateway lists now, front first."""
    return sorted(gw.call(lambda s: [(i.contract.lastTradeDateOrContractMonth, i.contract.localSymbol, i.con_id)
                                     for i in s.market.instruments if i.sec_type == "FUT"]))


def test_a_future_without_a_month_is_the_front_month(gw, book):
    (front_ltd, front_local, front_id), (_, next_local, next_id) = listed_es(gw)[:2]
    before = gw.requests()
    assert book.qualify("ES.CME").contract.conId == front_id
    assert book.describe("es.cme") == f"{front_local}.CME"
    assert gw.requests() == before + 1              # cached like any other text
    assert book.qualify(f"{next_local}.CME").contract.conId == next_id
    assert book.qualify(f"ES {front_ltd} CME").contract.conId == front_id


def test_ambiguous_contract_lists_candidates_and_picks_none(gw, book):
    listed = [f"{local}.CME" for _, local, _ in listed_es(gw)]
    before = gw.requests()
    with pytest.raises(InstrumentError) as err:
        book.qualify(tc.contract("ES", "FUT", "CME", "USD"))      # a Contract, not a text: no front-month rule
    e = err.value
    assert sorted(e.candidates) == sorted(listed) and len(listed) >= 2 and e.code is None
    assert e.understood == "contract with symbol ES, secType FUT, exchange CME, currency USD"
    assert f"ambiguous: IB lists {len(listed)} instruments" in str(e)
    assert f"{listed[0]} (E-mini S&P 500, CME, USD)" in str(e)
    with pytest.raises(InstrumentError):
        book.qualify(tc.contract("ES", "FUT", "CME", "USD"))   # ambiguity is not cached: asked again
    assert gw.requests() == before + 2
    for text in e.candidates:                     # every candidate is a text that qualifies
        assert format_contract(book.qualify(text)) == text


def test_ambiguous_bare_contract(gw, book):
    c = Contract()
    c.symbol = "ES"                               # secType empty: IB matches every ES
    with pytest.raises(InstrumentError) as err:
        book.qualify(c)
    assert err.value.candidates == [f"{local}.CME" for _, local, _ in listed_es(gw)]
    assert err.value.understood == "contract with symbol ES"
    only = Contract()
    only.symbol = "SIM0001"
    assert book.qualify(only).contract.conId == 900000001


def test_cache_hits_send_no_second_request(gw, book):
    before = gw.requests()
    first = book.qualify("MSFT")
    assert gw.requests() == before + 1 and book.requests_sent == 1
    for text in ("MSFT", " msft ", "MSFT@USD", "MSFT.NASDAQ", "conid:272093"):    # same text, answer, conId
        assert book.qualify(text).contract.conId == 272093
    assert book.details_by_con_id(272093).longName == "MICROSOFT CORP"
    assert book.describe("msft") == "MSFT.NASDAQ"
    assert book.contract(first.contract).conId == 272093        # a qualified Contract: by conId
    assert gw.requests() == before + 1 and book.requests_sent == 1
    assert book.cached("MSFT").contract.conId == 272093 and book.cached("AAPL") is None
    copy_ = book.qualify("MSFT")
    copy_.contract.symbol = "CHANGED"                           # callers get copies
    assert book.qualify("MSFT").contract.symbol == "MSFT"
    book.clear()
    assert book.cached("MSFT") is None
    book.qualify("MSFT")
    assert gw.requests() == before + 2


def test_eight_threads_on_one_text_send_one_request(gw, book):
    gw.delay_answers(0.3)                         # all eight are waiting before the answer arrives
    try:
        before = gw.requests()
        start = threading.Barrier(8)
        out: list = []

        def worker(text):
            start.wait()
            try:
                out.append(book.qualify(text).contract.conId)
            except Exception as exc:              # collected and asserted below
                out.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in ["SPY", " spy", "Spy", "SPY@USD"] * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert out == [756733] * 8
        assert gw.requests() == before + 1 and book.requests_sent == 1

        out.clear()
        threads = [threading.Thread(target=worker, args=("NOPE",)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(out) == 8 and all(isinstance(e, InstrumentError) and e.code == 200 for e in out)
        assert gw.requests() == before + 2
    finally:
        gw.delay_answers(0)


def test_many_threads_many_texts(gw, book):
    texts = ["AAPL", "GOOG", "MSFT", "SPY", "EUR/USD", "BTC/USD.PAXOS", "ES.CME", "^SPX.CBOE", "SIM0001",
             "SIM0003"]
    before = gw.requests()
    results: dict[str, set] = {t: set() for t in texts}
    lock = threading.Lock()

    def worker(k):
        for i in range(30):
            t = texts[(k + i) % len(texts)]
            cid = book.qualify(t).contract.conId
            with lock:
                results[t].add(cid)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert all(len(v) == 1 for v in results.values())
    assert gw.requests() - before == len(texts) == book.requests_sent


def test_ib_errors_propagate_unchanged(gw, session):
    slow = ContractBook(session, timeout=0.2)
    gw.delay_answers(0.6)
    try:
        with pytest.raises(RequestTimeout) as err:
            slow.qualify("AAPL")
        assert err.value.code == 0 and not isinstance(err.value, InstrumentError)
    finally:
        gw.delay_answers(0)
    assert slow.qualify("AAPL").contract.conId == 265598        # nothing stuck in flight

    lone = Session(port=gw.port, client_id=62)                 # never connected: 504
    with pytest.raises(IBError) as err:
        ContractBook(lone).qualify("AAPL")
    assert err.value.code == 504


def test_disconnect_fails_waiters_with_504(gw):
    s = Session(port=gw.port, client_id=63)
    s.connect()
    book = ContractBook(s)
    gw.delay_answers(1.0)
    errors: list = []
    try:
        threads = [threading.Thread(target=lambda: _catch(errors, book.qualify, "GOOG")) for _ in range(3)]
        for t in threads:
            t.start()
        threading.Event().wait(0.2)
        s.disconnect()
        for t in threads:
            t.join(5)
    finally:
        gw.delay_answers(0)
    assert [type(e) for e in errors] == [IBError] * 3 and {e.code for e in errors} == {504}
    assert book.requests_sent == 1


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except Exception as exc:
        errors.append(exc)


# --- future options (FOP) by IB's localSymbol ---------------------------------------------------------------
@pytest.mark.parametrize("text, canonical, local, exchange", [
    ("ESZ6 C5900", "ESZ6 C5900", "ESZ6 C5900", ""),
    ("  esz6   p5850 ", "ESZ6 P5850", "ESZ6 P5850", ""),
    ("EW2H7 P5850 CME", "EW2H7 P5850 CME", "EW2H7 P5850", "CME"),
    ("ESZ6 C5912.5 cme", "ESZ6 C5912.5 CME", "ESZ6 C5912.5", "CME"),
])
def test_a_future_option_is_written_by_its_local_symbol_and_round_trips(text, canonical, local, exchange):
    spec = parse(text)
    assert (spec.sec_type, spec.local_symbol, spec.exchange, spec.currency, spec.symbol) == (
        "FOP", local, exchange, "USD", "")
    assert spec.canonical == canonical and parse(canonical) == spec
    c = spec.to_contract()
    assert (c.secType, c.localSymbol, c.exchange, c.currency) == ("FOP", local, exchange, "USD")
    # a qualified one (IB's fields) writes the same text, exchange included
    q = tc.contract("ES", "FOP", "CME", lastTradeDateOrContractMonth="20261218", strike=5900.0, right="C",
                    multiplier="50", localSymbol="ESZ6 C5900", tradingClass="ES", conId=1946000000)
    assert format_contract(q) == "ESZ6 C5900 CME" and parse(format_contract(q)).local_symbol == "ESZ6 C5900"


@pytest.mark.parametrize("text, missing", [
    ("ESZ6 C0", "the strike must be above 0"),
    ("ESZ6 C5900 CME X", "unexpected 'X' after the exchange"),
    ("ESZ6 C5900 1CME", "is not an exchange name"),
])
def test_a_bad_future_option_text_says_what_is_wrong(text, missing):
    with pytest.raises(InstrumentError) as err:
        parse(text)
    assert missing in str(err.value) and "future option" in str(err.value)


def test_a_future_option_with_another_local_symbol_shape_falls_back_to_its_conid():
    odd = tc.contract("ES", "FOP", "CME", localSymbol="ES 12/18/26 C5900", conId=88)
    assert format_contract(odd) == "conid:88.CME"
