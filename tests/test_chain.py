"""Option chains (addin.market.chain) and the option UDFs (IB_CHAIN, IB_EXPIRIES, IB_STRIKES) against a
real paper gateway: the listing read over the wire with a plain ibapi client is the reference (never
today's date: "today" is the gateway's start day in New York), the requests that reach the gateway are
counted there, and the chain's rows are checked against the underlying's price and the greeks' own
rules (calls' delta decreasing in the strike, call bid <= ask)."""

from __future__ import annotations

import time
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

import udfs
from addin.app.runtime import Runtime, set_runtime
from addin.excel.layout import OPTIONS_COLUMNS
from addin.market.chain import chain_table, parse_expiry, parse_strikes, pick_expiry, plan_texts
from addin.paper import PaperGateway

from .gateway_wire import aapl_listing, count_messages, stock_mid
from .ibclient import IBTestClient
from .settle import settled

NY = ZoneInfo("US/Eastern")
COUNTED = {78: "reqSecDefOptParams", 9: "reqContractDetails", 1: "reqMktData"}


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        gateway.counts = count_messages(gateway, COUNTED)
        yield gateway


def gateway_day(gw) -> date:
    return gw.call(lambda s: s.market.start).astimezone(NY).date()


@pytest.fixture(scope="module")
def wire(gw):
    """The SMART row of reqSecDefOptParams for AAPL (expiries, strikes)."""
    return aapl_listing(gw.port, 81)


def aapl_mid(gw) -> float:
    return stock_mid(gw, "AAPL")


@pytest.fixture(scope="module")
def rt(gw):
    runtime = Runtime(port=gw.port, client_id=82, first_quote_wait=5.0)
    runtime.chains.today = lambda: gateway_day(gw)
    runtime.connect()
    previous = set_runtime(runtime)
    yield runtime
    set_runtime(previous)
    runtime.close()


def gateway_lines(gw, port_of_client=None) -> int:
    return gw.call(lambda s: len(s.marketdata.option_lines))


# --- arguments -----------------------------------------------------------------------------------------
def test_expiry_and_strikes_arguments_parse_or_name_themselves():
    day = date(2026, 12, 18)
    forms = [day, datetime(2026, 12, 18, 0, 0), "20261218", "2026-12-18", 46374, 46374.0]
    assert {parse_expiry(f).text for f in forms} == {"20261218"}       # 46374 = Excel's serial of that day
    assert parse_expiry(None).text == parse_expiry("").text == parse_expiry(" NEXT ").text == "next"
    assert parse_expiry("+2w").text == "+14d" and parse_expiry("+3m").text == "+3m"
    for bad in ("soon", "#N/A", "2026-13-01", 0, -3.5, True, "+3y", 1e308, 2958466, float("nan"), "+1e308d"):
        with pytest.raises(ValueError, match="^expiry: "):
            parse_expiry(bad)
    for code, name in ((-2146826246, "#N/A"), (-2146826281, "#DIV/0!")):    # COM error codes, as xlwings passes them
        with pytest.raises(ValueError, match=f"^expiry: the cell holds the error {name}"):
            parse_expiry(code)
        with pytest.raises(ValueError, match=f"^strikes: the cell holds the error {name}"):
            parse_strikes(code)
    with pytest.raises(ValueError, match="got 1e[+]308;"):                # the figure, not 309 digits
        parse_strikes(1e308)
    assert parse_strikes(None) == 10 and parse_strikes("6") == 6 and parse_strikes(4.0) == 4
    assert parse_strikes("200-250") == (200.0, 250.0) and parse_strikes("212.5 - 215") == (212.5, 215.0)
    for bad in ("250-200", "lots", 0, 2.5, "#REF!", 10_000):
        with pytest.raises(ValueError, match="^strikes: "):
            parse_strikes(bad)


def test_expiry_rules_pick_from_the_listing():
    listed = ["20261204", "20261211", "20261218", "20261224", "20270115", "20270319"]
    today = date(2026, 12, 3)
    assert pick_expiry(parse_expiry("next"), listed, today) == "20261204"
    assert pick_expiry(parse_expiry("next"), listed, date(2026, 12, 5)) == "20261211"
    assert pick_expiry(parse_expiry("monthly"), listed, today) == "20261218"    # December's third Friday
    assert pick_expiry(parse_expiry("+30d"), listed, today) == "20270115"       # first at or after Jan 2
    assert pick_expiry(parse_expiry("+2w"), listed, today) == "20261218"
    assert pick_expiry(parse_expiry("+3m"), listed, today) == "20270319"
    with pytest.raises(ValueError, match=r"expiry: 2026-12-19 is not listed for AAPL; nearest listed: .*2026-12-18"):
        pick_expiry(parse_expiry("2026-12-19"), listed, today, "AAPL")
    with pytest.raises(ValueError, match="^expiry: no listed expiry"):
        pick_expiry(parse_expiry("+12m"), listed, today, "AAPL")


# --- the listing and the plan over the wire --------------------------------------------------------------
def test_expiries_and_strikes_are_ibs_smart_row_cached_for_the_day(rt, gw, wire):
    expiries, strikes = wire
    today = gateway_day(gw).strftime("%Y%m%d")
    before = dict(gw.counts)
    assert rt.option_expiries("AAPL") == [e for e in expiries if e >= today]
    assert rt.option_strikes("AAPL", expiries[2]) == strikes           # every expiry lists the same strikes
    assert rt.option_strikes("AAPL", "next") == strikes
    assert gw.counts["reqSecDefOptParams"] - before.get("reqSecDefOptParams", 0) == 1
    # two expiries asked: one reqContractDetails each (plus AAPL's own qualification at most)
    assert gw.counts["reqContractDetails"] - before.get("reqContractDetails", 0) <= 3
    again = dict(gw.counts)
    rt.option_expiries("AAPL.NASDAQ")
    rt.option_strikes("AAPL", expiries[2])
    assert dict(gw.counts) == again                                     # the day's answers are kept
    with pytest.raises(ValueError, match="^underlying: IB 200"):
        rt.option_expiries("ZZZZ")
    with pytest.raises(ValueError, match="^underlying: IB lists no options on GOOG"):
        rt.option_expiries("GOOG")


def test_a_chain_streams_ten_strikes_centred_on_the_money(rt, gw, wire):
    _, strikes = wire
    plan = rt.option_chain("AAPL")
    mid = plan["UnderPrice"].iloc[0]                 # the price it was centred on: AAPL's at that moment
    assert abs(mid - aapl_mid(gw)) / mid < 0.01
    got = list(plan["Strike"])
    assert got == sorted(got) and len(got) == 10
    # the 10 listed strikes nearest the underlying's price (computed here from the listing)
    assert set(got) == set(sorted(strikes, key=lambda k: (abs(k - mid), k))[:10])
    below, above = sum(k < mid for k in got), sum(k >= mid for k in got)
    assert abs(below - above) <= 2
    assert plan["Stream"].all() and set(plan["Expiry"]) == {rt.option_expiries("AAPL")[0]}
    before = dict(gw.counts)
    keys = rt.hold_quotes(plan_texts(plan))
    assert len(keys) == 20 and gw.counts["reqContractDetails"] == before.get("reqContractDetails", 0)
    deadline = time.monotonic() + 10
    while True:
        version = rt.board.version
        table = chain_table(plan, rt.quote)
        if (table["Data"] == "streaming").all() and table["CallDelta"].notna().all() and \
                table["PutDelta"].notna().all() and table["CallOpenInterest"].notna().all():
            break
        assert time.monotonic() < deadline, table
        rt.board.wait(version, 0.5)
    assert list(table.columns) == OPTIONS_COLUMNS
    assert (table["CallBid"] <= table["CallAsk"]).all() and (table["PutBid"] <= table["PutAsk"]).all()
    assert table["CallDelta"].between(0, 1).all() and table["PutDelta"].between(-1, 0).all()
    assert table["CallDelta"].is_monotonic_decreasing and table["PutDelta"].is_monotonic_decreasing
    assert ((table["CallDelta"] - table["PutDelta"]) - 1.0).abs().lt(0.01).all()   # parity: e^-qT, about 1
    assert (table["CallOpenInterest"] >= 0).all() and (table["PutOpenInterest"] >= 0).all()   # generic tick 101
    assert gateway_lines(gw) >= 20


def test_a_range_and_a_small_budget_snapshot_what_does_not_fit(gw, wire):
    _, strikes = wire
    with Runtime(port=gw.port, client_id=83, max_lines=10) as small:
        small.chains.today = lambda: gateway_day(gw)
        small.connect()
        lines_before = gateway_lines(gw)
        plan = small.option_chain("AAPL", "next", "215-235")
        want = [k for k in strikes if 215 <= k <= 235]
        assert list(plan["Strike"]) == want
        # 10 lines free: half (5) for the chain -> 2 strikes (4 lines) stream, the nearest the money
        streaming = plan[plan["Stream"]]
        assert len(streaming) == 2
        mid = plan["UnderPrice"].iloc[0]
        nearest = sorted(want, key=lambda k: (abs(k - mid), k))[:2]
        assert sorted(streaming["Strike"]) == sorted(nearest)
        table = chain_table(plan, small.quote)
        snaps = table[table["Data"] == "snapshot"]
        assert len(snaps) == len(want) - 2
        assert (snaps["CallBid"] <= snaps["CallAsk"]).all() and snaps["CallDelta"].between(0, 1).all()
        assert gateway_lines(gw) == lines_before                     # snapshots hold no line at the gateway
        assert small.market.lines_in_use() <= 1                      # the underlying's snapshot at most


# --- the UDFs --------------------------------------------------------------------------------------------
def test_ib_chain_is_a_well_formed_streaming_table(rt, gw):
    value = settled(lambda: udfs.IB_CHAIN("AAPL", caller=("Options", "$A$1")), timeout=15)
    header, rows = value[0], value[1:]
    assert header == OPTIONS_COLUMNS and len(rows) == 10
    col = {h: i for i, h in enumerate(header)}
    strikes = [r[col["Strike"]] for r in rows]
    assert strikes == sorted(strikes)
    deadline = time.monotonic() + 10
    while any(r[col["Data"]] != "streaming" or r[col["CallDelta"]] is None for r in rows):
        assert time.monotonic() < deadline, rows
        version = rt.board.version
        rt.board.wait(version, 0.5)
        rows = udfs.IB_CHAIN("AAPL", caller=("Options", "$A$1"))[1:]
    mid = aapl_mid(gw)
    assert min(strikes) < mid < max(strikes)
    deltas = [r[col["CallDelta"]] for r in rows]
    assert all(0 < d < 1 for d in deltas) and deltas == sorted(deltas, reverse=True)
    assert all(r[col["CallBid"]] <= r[col["CallAsk"]] for r in rows)
    assert all(-1 < r[col["PutDelta"]] < 0 for r in rows)
    # the cell is registered under its lines: the pump recalculates it as they tick
    assert len(rt.registry.keys_of("Options", "$A$1")) >= 20
    picked = settled(lambda: udfs.IB_CHAIN("AAPL", "next", 4, "Strike, CallDelta, Data"))
    assert picked[0] == ["Strike", "CallDelta", "Data"] and len(picked) == 5


def test_ib_expiries_and_ib_strikes_are_columns(rt, gw, wire):
    expiries, strikes = wire
    today = gateway_day(gw)
    got = settled(lambda: udfs.IB_EXPIRIES("AAPL"))
    assert got == [[datetime.strptime(e, "%Y%m%d")] for e in expiries if e >= today.strftime("%Y%m%d")]
    assert settled(lambda: udfs.IB_STRIKES("AAPL", expiries[-1])) == [[k] for k in strikes]
    serial = (datetime.strptime(expiries[1], "%Y%m%d").date() - date(1899, 12, 30)).days
    assert settled(lambda: udfs.IB_STRIKES("AAPL", serial)) == [[k] for k in strikes]


@pytest.mark.parametrize("args, named", [
    (("ZZZZ",), "underlying"), (("#N/A",), "underlying"), ((None,), "underlying"),
    (("AAPL", "soon"), "expiry"), (("AAPL", -2146826246), "expiry"), (("AAPL", "#DIV/0!"), "expiry"),
    (("AAPL", "1999-01-15"), "expiry"), (("AAPL", "next", "lots"), "strikes"),
    (("AAPL", "next", 10, "CallPrice"), "fields"), (("GOOG",), "underlying"),
])
def test_bad_arguments_give_ibxl_text_naming_them(rt, args, named):
    text = settled(lambda: udfs.IB_CHAIN(*args))
    assert isinstance(text, str) and text.startswith(f"#IBXL: {named}: "), text
    if named in ("underlying", "expiry") and len(args) <= 2:
        other = settled(lambda: (udfs.IB_STRIKES if len(args) == 2 else udfs.IB_EXPIRIES)(*args))
        assert other.startswith(f"#IBXL: {named}: "), other


def test_option_methods_over_the_service(gw, tmp_path, wire):
    from addin.service.remote import RemoteRuntime
    from addin.service.server import embedded_service

    def factory():
        runtime = Runtime("127.0.0.1", gw.port, 84)
        runtime.chains.today = lambda: gateway_day(gw)
        return runtime
    expiries, strikes = wire
    with embedded_service(factory) as service, RemoteRuntime(service.address, service.authkey, name="t") as remote:
        assert remote.option_strikes("AAPL", expiries[3]) == strikes
        assert remote.option_expiries("AAPL")[0] >= gateway_day(gw).strftime("%Y%m%d")
        plan = remote.option_chain("AAPL", "next", 4)
        assert len(plan) == 4 and plan["Stream"].all()
        keys = remote.hold_quotes(plan_texts(plan))
        q = remote.board.wait_priced(keys[0], 10)
        deadline = time.monotonic() + 10
        while remote.board.get(keys[0]).delta is None:
            assert time.monotonic() < deadline
            remote.board.wait(remote.board.version, 0.5)
        assert q.bid <= q.ask and 0 < remote.board.get(keys[0]).delta < 1
        table = chain_table(plan, remote.quote)
        assert list(table["Strike"]) == list(plan["Strike"])
        with pytest.raises(Exception, match="expiry: "):
            remote.option_chain("AAPL", "soon")
        # the worksheet functions on the service's runtime (what a workbook's process uses)
        previous = set_runtime(remote)
        try:
            value = settled(lambda: udfs.IB_CHAIN("AAPL", "next", 6, caller=("Options", "$B$2")), remote, timeout=15)
            assert value[0] == OPTIONS_COLUMNS and len(value) == 7
            assert [r[0] for r in settled(lambda: udfs.IB_STRIKES("AAPL", expiries[3]), remote)] == strikes
            assert udfs.IB_CHAIN("AAPL", "soon").startswith("#IBXL: expiry: ")
        finally:
            set_runtime(previous)


def test_a_rows_data_says_what_its_lines_do():
    import pandas as pd

    from addin.market.chain import PLAN_COLUMNS
    from addin.market.quotes import BoardQuote
    plan = pd.DataFrame([{"Strike": k, "CallSymbol": f"X {k} C", "PutSymbol": f"X {k} P", "Stream": True}
                         for k in (1.0, 2.0, 3.0, 4.0)], columns=PLAN_COLUMNS)
    priced = dict(bid=1.0, ask=1.1, updated=datetime(2026, 1, 1))
    board = {"X 1.0 C": BoardQuote("X 1.0 C", **priced), "X 1.0 P": BoardQuote("X 1.0 P", **priced),
             "X 2.0 C": BoardQuote("X 2.0 C", **priced), "X 2.0 P": BoardQuote("X 2.0 P", bid=1.0),
             "X 3.0 C": BoardQuote("X 3.0 C", **priced, stale=True), "X 3.0 P": BoardQuote("X 3.0 P", **priced),
             "X 4.0 C": BoardQuote("X 4.0 C", error="IB 200: No security definition"), "X 4.0 P": None}
    table = chain_table(plan, board.get)
    assert list(table["Data"]) == ["streaming", "waiting", "stale", "#IB 200: No security definition"]
    assert table.loc[0, "CallBid"] == 1.0 and pd.isna(table.loc[3, "PutBid"])


@pytest.mark.parametrize("underlying, right_class", [("^SPX.CBOE", "SPX"), ("ES.CME", "ES")])
def test_an_index_and_a_future_have_chains_too(rt, gw, underlying, right_class):
    # an index (secType IND: reqSecDefOptParams by its conId, SMART row) and a future (FOP: the CME row)
    listing = rt.chains.listing(underlying)
    assert listing.trading_class == right_class and listing.exchange in ("SMART", "CME")
    plan = rt.option_chain(underlying, "next", 4)
    price = plan["UnderPrice"].iloc[0]
    strikes = list(plan["Strike"])
    assert len(strikes) == 4 and strikes == sorted(strikes) and min(strikes) <= price <= max(strikes) + 5
    keys = rt.hold_quotes(plan_texts(plan))
    deadline = time.monotonic() + 10
    while True:
        version = rt.board.version
        table = chain_table(plan, rt.quote)
        if table["CallDelta"].notna().all() and table["PutDelta"].notna().all():
            break
        assert time.monotonic() < deadline, table
        rt.board.wait(version, 0.5)
    assert table["CallDelta"].between(0, 1).all() and table["PutDelta"].between(-1, 0).all()
    assert table["CallDelta"].is_monotonic_decreasing and len(keys) == 8


# --- SPX: the nearest expiry across trading classes (SPXW dailies/weeklies PM, SPX monthlies AM) ----------
@pytest.fixture(scope="module")
def spx_wire(gw):
    """{tradingClass: expiries} of the SMART rows of reqSecDefOptParams for SPX (IND 416904), read with a
    plain ibapi client."""
    ib = IBTestClient().start(gw.port, 85)
    try:
        rid, start = ib.next_req(), ib.mark()
        ib.reqSecDefOptParams(rid, "SPX", "", "IND", 416904)
        rows = [e.args for e in ib.collect("securityDefinitionOptionParameter",
                                           "securityDefinitionOptionParameterEnd", rid, start=start)]
    finally:
        ib.stop()
    return {r[3]: sorted(r[5]) for r in rows if r[1] == "SMART"}


def test_spx_next_reaches_the_nearest_expiry_of_any_class_with_its_own_class(rt, gw, spx_wire):
    today = gateway_day(gw).strftime("%Y%m%d")
    assert set(spx_wire) == {"SPX", "SPXW"}
    ahead = {k: [e for e in v if e >= today] for k, v in spx_wire.items()}
    nearest = min(e for v in ahead.values() for e in v)
    want_class = "SPX" if nearest in ahead["SPX"] else "SPXW"     # a shared date goes to the class named SPX
    plan = rt.option_chain("SPX", "next", 4)                      # bare SPX: the index
    assert set(plan["Expiry"]) == {nearest} and len(plan) == 4
    for text in plan_texts(plan):
        c = rt.contracts.qualify(text).contract
        assert (c.symbol, c.tradingClass, c.lastTradeDateOrContractMonth[:8]) == ("SPX", want_class, nearest)
    # pinned: the nearest expiry of that class alone, fetched with it
    for klass in ("SPX", "SPXW"):
        pinned = rt.option_chain("SPX", f"next {klass}", 2)
        assert set(pinned["Expiry"]) == {ahead[klass][0]}
        c = rt.contracts.qualify(plan_texts(pinned)[0]).contract
        assert c.tradingClass == klass
    with pytest.raises(ValueError, match="expiry: tradingClass SPXX is not listed for .*SPX, SPXW"):
        rt.option_chain("SPX", "next SPXX", 2)


def test_a_date_both_classes_list_is_written_by_conid_and_pins_either_class(rt, gw, spx_wire):
    today = gateway_day(gw).strftime("%Y%m%d")
    shared = min(e for e in spx_wire["SPX"] if e >= today and e in spx_wire["SPXW"])
    classes = {}
    for rule, klass in ((shared, "SPX"), (f"{shared} SPXW", "SPXW"), (f"{shared} SPX", "SPX")):
        plan = rt.option_chain("^SPX.CBOE", rule, 2)
        texts = plan_texts(plan)
        assert all(t.startswith("conid:") for t in texts), texts          # "SPX <date> K C" would name both
        details = [rt.contracts.qualify(t).contract for t in texts]
        assert {c.tradingClass for c in details} == {klass}
        classes[rule] = {c.conId for c in details}
    assert classes[shared] == classes[f"{shared} SPX"] and not classes[shared] & classes[f"{shared} SPXW"]
    # the grammar text of such an option stays ambiguous, as at IB (never silently one class)
    k = rt.chains.strikes("SPX", f"{shared} SPX")[0]
    with pytest.raises(Exception, match="ambiguous"):
        rt.contracts.qualify(f"SPX {shared} {k:g} C")


def test_ib_expiries_shows_the_class_per_expiry_and_ib_chain_takes_spx(rt, gw, spx_wire):
    today = gateway_day(gw).strftime("%Y%m%d")
    got = settled(lambda: udfs.IB_EXPIRIES("SPX"))
    want = sorted((e, k) for k, v in spx_wire.items() for e in v if e >= today)
    assert [(d.strftime("%Y%m%d"), k) for d, k in got] == want
    only = settled(lambda: udfs.IB_EXPIRIES("SPX", "spxw"))
    assert [r[0].strftime("%Y%m%d") for r in only] == [e for e in spx_wire["SPXW"] if e >= today]
    assert settled(lambda: udfs.IB_EXPIRIES("AAPL"))[0] == [settled(lambda: udfs.IB_EXPIRIES("AAPL"))[0][0]]
    assert udfs.IB_EXPIRIES("SPX", "SPXX").startswith("#IBXL: trading_class: SPXX is not listed")
    value = settled(lambda: udfs.IB_CHAIN("SPX", "next", 4, caller=("Options", "$D$4")), timeout=15)
    assert value[0] == OPTIONS_COLUMNS and len(value) == 5
    pinned = settled(lambda: udfs.IB_STRIKES("SPX", "next", "SPX"))
    assert pinned and all(r[0] % 5 == 0 for r in pinned)
    assert udfs.IB_CHAIN("SPX", "next SPX", 4, None, "SPXW").startswith("#IBXL: trading_class:")
    assert parse_expiry("+ 30 d").text == "+30d" and parse_expiry("next spxw").text == "next SPXW"
    with pytest.raises(ValueError, match="expiry: 'soon' is not a date"):
        parse_expiry("soon")
