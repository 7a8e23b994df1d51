"""Every risk rule on its own: the refusal names the rule and gives the numbers; a good order passes."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from addin.config import RiskSettings, Settings
from addin.orders.risk import RULES, OrderFacts, RiskLimits, check_whatif, evaluate, on_tick_grid, round_to_tick
from addin.orders.rows import OrderIntent

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=timezone.utc)
LIMITS = RiskLimits.from_settings(Settings(risk=RiskSettings(
    max_quantity=100, max_notional=100_000, price_band_pct=5, quote_max_age=10, max_position=500, max_open_orders=20,
    max_orders_per_minute=10, daily_loss_limit=2_000)))
FACTS = OrderFacts(account="DU1", sec_type="STK", ib_symbol="AAPL", min_tick=0.01, bid=199.99, ask=200.01,
                   last=200.0, quote_time=NOW - timedelta(seconds=1), now=NOW)
BUY = OrderIntent(row=0, ref="R1", account="DU1", symbol="AAPL", action="BUY", quantity=10, order_type="LMT",
                  limit_price=199.5)


def refusals(intent=BUY, facts=FACTS, limits=LIMITS, **changes):
    r = evaluate(intent, replace(facts, **changes), limits)
    return [c.message for c in r.refusals]


def test_a_good_order_passes_every_rule():
    result = evaluate(BUY, FACTS, LIMITS)
    assert result.ok and result.message == "" and result.intent == BUY


@pytest.mark.parametrize("intent_changes, fact_changes, limit_changes, message", [
    ({}, {}, {"read_only": True}, "read_only: ibxl is in read-only mode"),
    ({}, {"kill_switch": True}, {}, "kill_switch: the kill switch is engaged"),
    ({}, {"account": "U1234"}, {}, "live_account: U1234 is a live account"),
    ({}, {"account": ""}, {}, "live_account: no account"),
    ({}, {"ref_state": "filled"}, {}, "duplicate_ref: R1 was already sent (filled)"),
    ({}, {"sec_type": "OPT"}, {}, "sec_type: OPT is not allowed"),
    ({}, {}, {"symbol_deny": ("AAPL",)}, "symbol_list: AAPL is on the deny list"),
    ({}, {}, {"symbol_allow": ("MSFT",)}, "symbol_list: AAPL is not on the allow list (MSFT)"),
    ({"quantity": 150}, {}, {"max_notional": 1e9, "max_position": 1e9}, "max_quantity: 150 > limit 100"),
    ({"limit_price": 199.555}, {}, {}, "tick_grid: LimitPrice 199.555 is not a multiple of the tick 0.01"),
    ({"order_type": "MKT", "limit_price": None}, {"quote_time": NOW - timedelta(seconds=30)}, {},
     "stale_quote: MKT needs a quote of AAPL no older than 10 s; the latest is 30.0 s old"),
    ({"order_type": "MKT", "limit_price": None}, {"quote_time": None}, {}, "stale_quote: MKT needs a quote"),
    ({"limit_price": 180.0}, {}, {}, "price_band: LimitPrice 180 is 10.00% from the quote 200 (band 5%)"),
    ({"limit_price": 199.0, "take_profit": 250.0}, {}, {}, "price_band: TakeProfit 250 is 25.00% from the quote 200"),
    ({"quantity": 60, "limit_price": 200.0}, {"multiplier": 10.0}, {}, "max_notional: 120,000 USD > limit 100,000 USD"),
    ({}, {"fx_rate": None, "currency": "EUR"}, {}, "max_notional: no exchange rate EUR -> USD"),
    ({}, {"position": 480, "open_buy": 15}, {}, "max_position: position 480 with open orders (+15/-0) and this order "
                                                "would be 505, limit 500"),
    ({"action": "SELL"}, {"position": 5, "open_sell": 2}, {}, "allow_short: selling 10 with position 5 (open sells 2) "
                                                              "would leave -7; allow_short is off"),
    ({"take_profit": 205.0, "stop_loss": 195.0}, {"open_orders": 18}, {},
     "max_open_orders: 18 open + 3 new > limit 20"),
    ({}, {"recent_orders": 10}, {}, "max_orders_per_minute: 10 sent in the last minute + 1 new > limit 10"),
    ({}, {"daily_pnl": -2000.0}, {}, "daily_loss: today's P&L -2,000 USD reached the limit -2,000 USD"),
    ({}, {"daily_pnl": None}, {}, "daily_loss: no live P&L for DU1"),
])
def test_each_rule_refuses_with_its_name_and_numbers(intent_changes, fact_changes, limit_changes, message):
    got = refusals(replace(BUY, **intent_changes), FACTS, replace(LIMITS, **limit_changes), **fact_changes)
    assert got[0].startswith(message), got
    # a market order without a fresh quote also has no price to value it: max_notional says so too
    assert len(got) == 1 or (message.startswith("stale_quote") and got[1].startswith("max_notional: no price")), got
    assert got[0].split(":")[0] in RULES


def test_limits_at_exactly_the_limit_pass():
    assert refusals(replace(BUY, quantity=100), limits=replace(LIMITS, max_notional=1e9)) == []
    assert refusals(replace(BUY, limit_price=190.0)) == []                 # exactly 5% from the mid
    assert refusals(open_orders=19) == [] and refusals(recent_orders=9) == []
    assert refusals(replace(BUY, action="SELL", limit_price=200.5), position=10) == []   # sells to flat
    assert refusals(replace(BUY, action="SELL", limit_price=200.5), limits=replace(LIMITS, allow_short=True)) == []
    assert refusals(daily_pnl=-1999.99) == []
    assert refusals(account="U1", limits=replace(LIMITS, allow_live=True)) == []


def test_every_failing_rule_is_reported_not_just_the_first():
    got = refusals(replace(BUY, quantity=1000, limit_price=100.001), kill_switch=True, account="U9")
    assert [m.split(":")[0] for m in got] == ["kill_switch", "live_account", "max_quantity", "tick_grid",
                                              "price_band", "max_notional", "max_position"]


def test_round_to_tick_rounds_instead_of_refusing_and_says_so():
    limits = replace(LIMITS, round_to_tick=True)
    result = evaluate(replace(BUY, limit_price=199.554, stop_loss=None), FACTS, limits)
    assert result.ok and result.intent.limit_price == 199.55
    assert result.message == "tick_grid: LimitPrice 199.554 rounded to 199.55"


def test_tick_grid_arithmetic_is_exact():
    assert on_tick_grid(229.37, 0.01) and on_tick_grid(1.22915, 0.00005) and on_tick_grid(6001.25, 0.25)
    assert not on_tick_grid(6001.1, 0.25) and not on_tick_grid(1.22913, 0.00005)
    assert not on_tick_grid(0.3 + 0.0001, 0.01)
    assert on_tick_grid(1e26, 0.01) and on_tick_grid(5.0, 0.0)
    assert round_to_tick(6001.1, 0.25) == 6001.0 and round_to_tick(1.229131, 0.00005) == 1.22915


def test_market_orders_are_valued_at_the_touch_and_notional_uses_the_multiplier():
    es = replace(FACTS, sec_type="FUT", ib_symbol="ES", multiplier=50.0, min_tick=0.25, bid=5999.75, ask=6000.25,
                 last=6000.0)
    mkt = replace(BUY, quantity=1, order_type="MKT", limit_price=None)
    assert refusals(mkt, es, replace(LIMITS, max_notional=300_012.5)) == []
    assert refusals(mkt, es, replace(LIMITS, max_notional=300_000))[0] == \
        "max_notional: 300,012.50 USD > limit 300,000 USD"


def test_whatif_margin_rule():
    assert check_whatif(50_000.0, 60_000.0, "USD").ok
    bad = check_whatif(70_000.0, 60_000.0, "USD")
    assert not bad.ok and bad.message == "whatif_margin: initial margin +70,000 USD > available funds 60,000 USD"
    assert not check_whatif(None, 60_000.0, "USD").ok
