"""Pre-trade risk on option orders: notional = quantity x price x multiplier (a 10-lot of a 2.50 option
is 2,500, not 25), max_position counts contracts, the price band works on the option's own quote. With
the real OrderDesk against the paper gateway: a refused row sends nothing (counted at the gateway)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from addin.orders.risk import OrderFacts, RiskLimits, evaluate
from addin.orders.rows import OrderIntent

from .test_orders import ROOMY, Rig, read_orders, settings, write_orders, write_refs

ALLOW_OPT = ROOMY.allowed_sec_types + ("OPT",)


def intent(**kw) -> OrderIntent:
    base = dict(row=0, ref="R1", account="DU1", symbol="AAPL 20261218 200 C", action="BUY", quantity=10.0,
                order_type="LMT", limit_price=2.50)
    base.update(kw)
    return OrderIntent(**base)


def facts(**kw) -> OrderFacts:
    now = datetime(2026, 11, 19, 15, 0, tzinfo=timezone.utc)
    base = dict(account="DU1", sec_type="OPT", ib_symbol="AAPL", multiplier=100.0, min_tick=0.01,
                bid=2.45, ask=2.55, last=None, quote_time=now, now=now)
    base.update(kw)
    return OrderFacts(**base)


def limits(**kw) -> RiskLimits:
    return RiskLimits.from_settings(replace(ROOMY, allowed_sec_types=ALLOW_OPT, **kw))


def test_option_notional_counts_the_multiplier():
    r = evaluate(intent(), facts(), limits(max_notional=2_000))
    assert [c.message for c in r.refusals] == ["max_notional: 2,500 USD > limit 2,000 USD"]
    assert evaluate(intent(), facts(), limits(max_notional=2_500)).ok
    # A market order is valued at the touch: 10 x 2.55 x 100.
    r = evaluate(intent(order_type="MKT", limit_price=None), facts(), limits(max_notional=2_000))
    assert [c.message for c in r.refusals] == ["max_notional: 2,550 USD > limit 2,000 USD"]


def test_option_position_limit_counts_contracts_and_the_band_is_the_options_own():
    r = evaluate(intent(quantity=6), facts(position=3), limits(max_position=8))
    assert [c.rule for c in r.refusals] == ["max_position"] and "would be 9" in r.refusals[0].message
    assert evaluate(intent(quantity=5), facts(position=3), limits(max_position=8)).ok
    r = evaluate(intent(limit_price=2.70), facts(), limits(price_band_pct=5))        # 2.70 is 5.9 % over 2.50
    assert [c.rule for c in r.refusals] == ["price_band"]
    assert "quote 2.5 " in r.refusals[0].message


# --- the real desk ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gw():
    from addin.paper import PaperGateway
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0, accounts=["DU1"]) as gateway:
        yield gateway


@pytest.fixture
def rig(gw, tmp_path):
    r = Rig(gw, tmp_path)
    yield r
    r.close()


def listed_call(gw, moneyness: float = 1.0) -> tuple[str, float]:
    """Cell text of the AAPL call of the second listed expiry nearest moneyness x the stock's start
    price, and its strike."""
    def read(s):
        oc = s.market.options.classes["AAPL"]
        strike = min(oc.strikes, key=lambda k: abs(k - moneyness * oc.reference))
        return oc.expiries[1].strftime("%Y%m%d"), strike
    expiry, strike = gw.call(read)
    return f"AAPL {expiry} {strike:g} C", strike


def test_option_rows_refused_by_risk_send_nothing_and_the_good_one_fills(rig, tmp_path):
    text, _ = listed_call(rig.gw)
    q = rig.market.snapshot(text)
    assert q.bid > 0 and q.ask > q.bid
    mid = (q.bid + q.ask) / 2
    lmt = round(q.ask, 2)
    rows = [
        {"Ref": "O-GOOD", "Symbol": text, "Action": "BUY", "Quantity": 2, "OrderType": "LMT", "LimitPrice": lmt},
        # notional: 10 x lmt x 100 above the limit set below, although 10 x lmt is tiny
        {"Ref": "O-NOTIONAL", "Symbol": text, "Action": "BUY", "Quantity": 10, "OrderType": "LMT", "LimitPrice": lmt},
        # 6 contracts after O-GOOD's 2 against a limit of 5 (shares would be 600)
        {"Ref": "O-POS", "Symbol": text, "Action": "BUY", "Quantity": 6, "OrderType": "LMT", "LimitPrice": lmt},
        # 20 % under the option's mid: outside the 5 % band of the option's quote
        {"Ref": "O-BAND", "Symbol": text, "Action": "BUY", "Quantity": 1, "OrderType": "LMT",
         "LimitPrice": round(mid * 0.8, 2)},
    ]
    for r in rows:
        r["Account"] = "DU1"
    max_notional = 10 * lmt * 100 - 1            # the 10-lot is just over; the 2-lot (2 x lmt x 100) under
    assert 2 * lmt * 100 < max_notional
    path = write_orders(tmp_path / "orders.xlsx", rows)
    desk = rig.desk(settings(allowed_sec_types=ALLOW_OPT, max_notional=max_notional, max_position=5))
    out = desk.place(read_orders(path), write_refs=write_refs(path)).set_index("Ref")
    assert str(out.loc["O-NOTIONAL", "Message"]).startswith("max_notional:"), out.loc["O-NOTIONAL", "Message"]
    assert f"{10 * lmt * 100:,.2f}".removesuffix(".00") in out.loc["O-NOTIONAL", "Message"]
    pos_message = out.loc["O-POS", "Message"]
    assert "max_position:" in pos_message and "would be 8" in pos_message       # O-GOOD's 2 + 6 contracts
    assert "price_band:" in out.loc["O-BAND", "Message"]
    assert [r.order.orderRef for r in rig.received()] == ["O-GOOD"]        # what reached the gateway
    sent = rig.received()[0]
    assert sent.contract.secType == "OPT" and sent.contract.conId > 0
    filled = rig.wait_status(desk, "O-GOOD", "Filled")
    assert filled["Filled"] == 2 and filled["AvgFillPrice"] <= lmt


def test_option_orders_are_refused_while_opt_is_not_an_allowed_sec_type(rig, tmp_path):
    text, _ = listed_call(rig.gw)
    path = write_orders(tmp_path / "o.xlsx", [{"Ref": "O-SEC", "Account": "DU1", "Symbol": text, "Action": "BUY",
                                              "Quantity": 1, "OrderType": "MKT"}])
    out = rig.desk(settings()).place(read_orders(path), write_refs=write_refs(path)).set_index("Ref")
    assert str(out.loc["O-SEC", "Message"]).startswith("sec_type: OPT is not allowed")
    assert rig.received() == []
