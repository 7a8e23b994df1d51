"""Property-based fuzzing of order rows (hypothesis, derandomized so CI runs the same examples).

1. Thousands of generated rows (cells as Excel delivers them, junk included) and generated facts go
   through ``parse_row`` and ``risk.evaluate``: nothing raises, and an order the rules approve passes an
   independent oracle written here from the rules' text (soundness), while an order the oracle
   approves is approved (completeness).
2. Generated sheets go through a real OrderDesk to a paper gateway whose replay is frozen (speed 0, so
   the quotes the oracle checks against are the ones the desk saw): place() never raises, every row
   gets a Status, and every order the gateway received satisfies every rule and came from a row
   that parsed, once.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from addin.config import Settings
from addin.orders.risk import OrderFacts, RiskLimits, evaluate
from addin.orders.rows import ORDER_INPUT_COLUMNS, OrderIntent, RowError, parse_row

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=timezone.utc)   # the frozen gateway's start and the facts' clock
FUT_TEXT = "ES 202612 CME"      # listed at NOW; written by its month, so it reads the same under any clock
LIMITS = RiskLimits.from_settings(Settings(risk=replace(
    Settings().risk, max_quantity=50, max_notional=400_000, price_band_pct=3.0, quote_max_age=5.0, max_position=120,
    max_open_orders=30, max_orders_per_minute=40, daily_loss_limit=1_000, symbol_deny=("MSFT",))))
# symbol -> (secType, min tick, multiplier, reference price) as the paper gateway has them
MARKET = {"AAPL": ("STK", 0.01, 1.0, 229.38), "MSFT": ("STK", 0.01, 1.0, 410.0), FUT_TEXT: ("FUT", 0.25, 50.0, 6001.0),
          "EUR/USD": ("CASH", 0.00005, 1.0, 1.22915), "BTC/USD.PAXOS": ("CRYPTO", 0.25, 1.0, 94766.0),
          "^SPX.CBOE": ("IND", 0.01, 1.0, 5991.99)}
# IB's (minSize, sizeIncrement) as the paper gateway sends them (docs/paper-market.md)
SIZES = {"STK": ("0.0001", "0.0001"), "FUT": ("1", "1"), "CASH": ("0.01", "0.01"), "CRYPTO": ("0.0001", "0.0001"),
         "IND": ("1", "1")}
IB_SYMBOL = {"AAPL": "AAPL", "MSFT": "MSFT", FUT_TEXT: "ES", "EUR/USD": "EUR", "BTC/USD.PAXOS": "BTC",
             "^SPX.CBOE": "SPX"}
JUNK = ["#N/A", "#VALUE!", " ", "", None, float("nan"), "abc", True, -2146826246]


# --- generated cells ----------------------------------------------------------------------------------------
def _variants(text: str):
    return st.sampled_from([text, text.lower(), f"  {text} ", text.title()])


def _clean_price(ref: float, tick: float):
    t = Fraction(repr(tick))
    base = Fraction(repr(ref)) // t
    span = int(ref * 0.06 / tick)
    return st.integers(-span, span).map(lambda k: float((base + k) * t))


@st.composite
def rows(draw, refs=None, spoil=(0, 0, 0, 1, 1, 2)):
    """A plausible row (what a trader means to type) with 0-2 cells then spoiled as Excel might deliver them."""
    symbol = draw(st.sampled_from(list(MARKET)))
    _, tick, _, ref_price = MARKET[symbol]
    price = _clean_price(ref_price, tick)
    order_type = draw(st.sampled_from(["MKT", "MKT", "LMT", "LMT", "STP", "STP LMT", "TRAIL", "MOC", "LOC"]))
    row = {c: None for c in ORDER_INPUT_COLUMNS}
    row.update({
        "Ref": draw(refs) if refs is not None else draw(st.one_of(st.none(), st.text("AB-1.", min_size=1, max_size=6),
                                                                 st.integers(0, 99))),
        "Account": draw(st.sampled_from(["DU1", "DU1", "DU1", "du1 ", "U2", None])),
        "Symbol": draw(_variants(symbol)),
        "Action": draw(st.one_of(_variants("BUY"), _variants("SELL"))),
        "Quantity": draw(st.one_of(st.integers(1, 5), st.integers(1, 5), st.integers(1, 70).map(float),
                                   st.integers(1, 9).map(lambda q: f" {q} "), st.sampled_from(["1,000", "2.5"]))),
        "OrderType": draw(_variants(order_type)),
        "TIF": draw(st.sampled_from([None, "DAY", "day", "GTC"] if order_type not in ("MOC", "LOC")
                                    else [None, "DAY"])),
    })
    if order_type in ("LMT", "STP LMT", "LOC"):
        row["LimitPrice"] = draw(price)
    if order_type in ("STP", "STP LMT"):
        row["StopPrice"] = draw(price)
    if order_type == "TRAIL":
        which = draw(st.sampled_from(["TrailAmount", "TrailPercent"]))
        row[which] = draw(st.sampled_from([0.5, 1.0, 2.0, "1"]))
        row["StopPrice"] = draw(st.one_of(st.none(), price))
    if order_type in ("MKT", "LMT", "STP", "STP LMT") and draw(st.integers(0, 3)) == 0:
        row["TakeProfit"] = draw(st.one_of(st.none(), price))
        row["StopLoss"] = draw(st.one_of(st.none(), price))
    elif draw(st.integers(0, 5)) == 0:
        row["OCAGroup"] = draw(st.sampled_from(["G1", " g2 ", 7]))
    row["OutsideRTH"] = draw(st.sampled_from([None, None, True, "FALSE", 1]))
    row["Transmit"] = draw(st.sampled_from([None, None, None, True, "TRUE", False]))
    for _ in range(draw(st.sampled_from(spoil))):
        col = draw(st.sampled_from([c for c in ORDER_INPUT_COLUMNS if c != "Ref"]))
        row[col] = draw(st.one_of(st.sampled_from(JUNK + ["HOLD", "X", 0, -5, 3.5, "1e3", "inf"]),
                                  st.floats(allow_nan=True, allow_infinity=True), price))
    return row


@st.composite
def facts_for(draw, symbol: str):
    """Facts that are mostly benign, each one sometimes at or past its limit."""
    sec_type, tick, mult, ref_price = MARKET[symbol]
    rarely = lambda usual, *odd: draw(st.sampled_from([usual] * 6 + list(odd)))   # noqa: E731
    spread = tick * draw(st.integers(0, 4))
    age = rarely(0.5, None, 4.9, 5.1, 60.0)
    sizes = rarely(SIZES[sec_type], (None, None), ("1", "1"), ("5", "5"))
    return OrderFacts(
        min_size=None if sizes[0] is None else Decimal(sizes[0]),
        size_increment=None if sizes[1] is None else Decimal(sizes[1]),
        account="", sec_type=sec_type, ib_symbol=IB_SYMBOL[symbol], currency="USD", multiplier=mult, min_tick=tick,
        bid=rarely(ref_price - spread / 2, None), ask=rarely(ref_price + spread / 2, None),
        last=rarely(ref_price, None, ref_price * 1.01),
        quote_time=None if age is None else NOW - timedelta(seconds=age), fx_rate=rarely(1.0, None, 1.1),
        position=rarely(0.0, 40.0, -40.0, 100.0), open_buy=rarely(0.0, 10.0), open_sell=rarely(0.0, 10.0),
        open_orders=rarely(3, 27, 28, 29, 30), recent_orders=rarely(2, 37, 38, 39, 40),
        daily_pnl=rarely(0.0, -999.0, -1000.0, None, float("nan")),
        ref_state=rarely(None, "working", "filled", "not_received", "rejected", "transmitting"),
        kill_switch=rarely(False, True), now=NOW)


# --- the oracle: the rules as stated in the docs, written independently ---------------------------------------
def _grid(p: float, tick: float) -> bool:
    return (Fraction(repr(p)) / Fraction(repr(tick))).denominator == 1


def oracle(i: OrderIntent, f: OrderFacts, lim: RiskLimits) -> list[str]:
    bad = []
    if lim.read_only:
        bad.append("read_only")
    if f.kill_switch:
        bad.append("kill_switch")
    if not f.account or (f.account[0] != "D" and not lim.allow_live):
        bad.append("live_account")
    if f.ref_state in ("transmitting", "working", "filled", "cancelled", "acknowledged"):
        bad.append("duplicate_ref")
    if f.sec_type not in lim.allowed_sec_types:
        bad.append("sec_type")
    if f.ib_symbol in lim.symbol_deny or (lim.symbol_allow and f.ib_symbol not in lim.symbol_allow):
        bad.append("symbol_list")
    if i.quantity > lim.max_quantity:
        bad.append("max_quantity")
    min_size, step = (f.min_size, f.size_increment) if f.min_size or f.size_increment else (1, 1)
    if min_size and Fraction(repr(i.quantity)) < Fraction(min_size):
        bad.append("min_size")
    elif step and not _grid(i.quantity, float(step)):
        bad.append("size_increment")
    prices = [p for p in (i.limit_price, i.stop_price, i.take_profit, i.stop_loss) if p is not None]
    distances = [d for d in (i.trail_amount, i.offset) if d is not None]
    if any(not _grid(p, f.min_tick) for p in prices + distances):
        bad.append("tick_grid")
    fresh = f.quote_time is not None and (f.now - f.quote_time) <= timedelta(seconds=lim.quote_max_age)
    ref = None
    if fresh:
        if f.bid and f.ask and f.bid > 0 and f.ask >= f.bid:
            ref = (f.bid + f.ask) / 2
        elif f.last and f.last > 0:
            ref = f.last
    if ref is None and (i.order_type in ("MKT", "MOC") or (i.order_type == "TRAIL" and i.stop_price is None)):
        bad.append("stale_quote")
    if prices and (ref is None or any(abs(p - ref) > ref * lim.price_band_pct / 100 + 1e-9 for p in prices)):
        bad.append("price_band")
    if ref is not None and any(d >= ref for d in distances):      # a trail or offset as large as the price
        bad.append("price_band")
    touch = (f.ask if i.action == "BUY" else f.bid) if fresh else None
    touch = touch if touch and touch > 0 else ref
    unit = i.limit_price or i.stop_price or touch
    if i.order_type in ("MKT", "MOC", "TRAIL") and touch:
        unit = max(unit or 0, touch)
    if unit is None or not f.fx_rate or i.quantity * unit * f.multiplier * f.fx_rate > lim.max_notional:
        bad.append("max_notional")
    after = f.position + f.open_buy + i.quantity if i.action == "BUY" else f.position - f.open_sell - i.quantity
    if abs(after) > lim.max_position:
        bad.append("max_position")
    if i.action == "SELL" and after < 0 and not lim.allow_short:
        bad.append("allow_short")
    legs = 1 + (i.take_profit is not None) + (i.stop_loss is not None)
    if f.open_orders + legs > lim.max_open_orders:
        bad.append("max_open_orders")
    if f.recent_orders + legs > lim.max_orders_per_minute:
        bad.append("max_orders_per_minute")
    if f.daily_pnl is None or math.isnan(f.daily_pnl) or f.daily_pnl <= -lim.daily_loss_limit:
        bad.append("daily_loss")
    return bad


# --- 1. rules over generated rows and facts ------------------------------------------------------------------
@hsettings(max_examples=3000, derandomize=True, database=None, deadline=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_generated_rows_never_pass_a_rule_they_break_and_never_crash(data):
    row = data.draw(rows())
    parsed = parse_row(row, 0)
    if isinstance(parsed, RowError):
        assert parsed.column in ORDER_INPUT_COLUMNS and str(parsed).startswith(parsed.column + ":")
        return
    assert parsed.quantity > 0 and math.isfinite(parsed.quantity) and parsed.action in ("BUY", "SELL")
    symbol = next((s for s in MARKET if s.lower() == parsed.symbol.lower()), None)
    if symbol is None:                  # grammatical but not an instrument: IB's 200 at qualification
        return
    facts = replace(data.draw(facts_for(symbol)), account=parsed.account)
    result = evaluate(parsed, facts, LIMITS)
    expected = oracle(parsed, facts, LIMITS)
    got = sorted({c.rule for c in result.refusals})
    assert got == sorted(set(expected)), (parsed, facts, result.message)
    for c in result.refusals:
        assert c.message.startswith(c.rule + ": ")


# --- 2. generated sheets through the desk to a frozen paper gateway -----------------------------------------
@pytest.fixture(scope="module")
def desk_rig(tmp_path_factory):
    from addin.account.portfolio import Portfolio
    from addin.ib.contracts import ContractBook
    from addin.ib.session import Session
    from addin.market.quotes import MarketData
    from addin.orders.desk import OrderDesk
    from addin.paper import PaperGateway
    with PaperGateway(port=0, speed=0, start=NOW, stream_interval=0.05, account_interval=1.0,
                      accounts=["DU1", "U2"]) as gw:
        s = Session(port=gw.port, client_id=77)
        s.connect()
        contracts = ContractBook(s)
        md = MarketData(s, contracts)
        quotes = {}
        for sym in MARKET:
            q = md.snapshot(sym)
            d = contracts.qualify(sym)
            quotes[d.contract.conId] = (q, d)
        pf = Portfolio(s)
        desk_settings = Settings(risk=replace(Settings().risk, **{k: getattr(LIMITS, k) for k in (
            "max_quantity", "max_notional", "price_band_pct", "quote_max_age", "max_position", "daily_loss_limit",
            "symbol_deny")}, max_orders_per_minute=1_000, max_open_orders=1_000, ack_timeout=3.0))
        desk = OrderDesk(s, contracts, md, pf, desk_settings, tmp_path_factory.mktemp("fuzz") / "journal.db")
        yield gw, desk, quotes, pf
        desk.close()
        pf.close()
        md.close()
        s.disconnect()


_sheet_ids = itertools.count()
_sent_refs: set[str] = set()


@hsettings(max_examples=30, derandomize=True, database=None, deadline=None,
           phases=[Phase.explicit, Phase.generate],            # no shrinking against a stateful gateway
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                  HealthCheck.data_too_large])
@given(data=st.data())
def test_generated_sheets_transmit_only_orders_that_pass_every_rule(desk_rig, data):
    gw, desk, quotes, portfolio = desk_rig
    sheet_no = next(_sheet_ids)
    refs = st.one_of(st.integers(0, 11).map(lambda k: f"S{sheet_no}-{k}"), st.none())
    sheet = data.draw(st.lists(rows(refs=refs, spoil=(0, 0, 0, 0, 1)), min_size=6, max_size=14))
    frame = pd.DataFrame(sheet, columns=list(ORDER_INPUT_COLUMNS))
    before = len(gw.received_orders())
    out = desk.place(frame)
    assert list(out.index) == list(frame.index)
    assert out.Status.notna().all() and out.Ref.notna().all()
    assert out[out.Status.isin(["Error", "Refused"])].Message.notna().all()

    by_ref: dict = {}
    for label, r in out.Ref.items():          # the first row with a Ref owns it (later ones are duplicates)
        by_ref.setdefault(r, label)
    for got in gw.received_orders()[before:]:
        o, c = got.order, got.contract
        base = o.orderRef.removesuffix(".TP").removesuffix(".SL")
        assert base in by_ref, f"{o.orderRef} came from no row of this sheet"
        source = parse_row(frame.loc[by_ref[base]].to_dict(), by_ref[base])
        assert isinstance(source, OrderIntent), f"{o.orderRef} was sent from a row that does not parse: {source}"
        if o.orderRef == base:
            assert base not in _sent_refs, f"{base} sent twice"
            _sent_refs.add(base)
            assert float(o.totalQuantity) == source.quantity and o.action == source.action
        assert o.account.startswith("D")
        q, details = quotes[c.conId]
        tick, mult = details.minTick, float(details.contract.multiplier or 1)
        assert details.contract.secType in LIMITS.allowed_sec_types
        assert details.contract.symbol not in LIMITS.symbol_deny
        assert float(o.totalQuantity) <= LIMITS.max_quantity
        ref = (q.bid + q.ask) / 2
        stop = o.trailStopPrice if o.orderType == "TRAIL" else o.auxPrice if o.orderType in ("STP", "STP LMT") else None
        checked = [p for p in (o.lmtPrice, stop) if p is not None and p < 1e300]
        for p in checked:
            assert _grid(p, tick), (o.orderRef, p, tick)
            assert abs(p - ref) <= ref * LIMITS.price_band_pct / 100 + 1e-9, (o.orderRef, p, ref)
        if o.orderRef == base:
            unit = checked[0] if checked else 0.0
            if o.orderType in ("MKT", "MOC", "TRAIL"):
                unit = max(unit, q.ask if o.action == "BUY" else q.bid)
            assert unit > 0 and float(o.totalQuantity) * unit * mult <= LIMITS.max_notional + 1e-6, (o.orderRef, unit)

    # positions and working orders together never break max_position, and nothing went short
    positions = portfolio.positions(account="DU1")
    working = portfolio.open_orders()
    for con_id in set(positions.con_id) | set(working.con_id):
        pos = float(positions[positions.con_id == con_id].position.sum())
        mine = working[(working.con_id == con_id) & (working.account == "DU1")]
        buys = float(mine[mine.action == "BUY"].remaining.sum())
        sells = float(mine[mine.action == "SELL"].remaining.sum())
        assert pos - sells >= -1e-9, (con_id, pos, sells)
        assert pos + buys <= LIMITS.max_position + 1e-9, (con_id, pos, buys)
