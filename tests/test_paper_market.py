"""The paper gateway's market model (addin.paper.market.market): real data replayed, the tick generator, bars,
quotes, the replay clock, the instrument universe and IB-style contract matching. Real data, no mocks.

Most tests use one market frozen at a fixed start (speed 0), so every number is reproducible."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ibapi.contract import Contract

from addin.paper.market import ticks as tk
from addin.paper.market.market import Bar, BarSpec, Market, Quote, on_tick_grid, round_to_tick
from addin.paper.market.universe import SYNTHETIC_BASE

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
DATA = Path(__file__).resolve().parents[1] / "addin" / "paper" / "market" / "data"
START = datetime(2026, 11, 20, 15, 45, 30, 250000, tzinfo=UTC)   # a Friday afternoon in New York
DAY, HOUR, MINUTE = BarSpec(86400), BarSpec(3600), BarSpec(60)


# --- helpers ----------------------------------------------------------------------------------------
def contract(symbol="", sec_type="", exchange="", currency="", **extra) -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, sec_type, exchange, currency
    for k, v in extra.items():
        setattr(c, k, v)
    return c


def real(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / name, index_col=0, parse_dates=True)


def by_local(market: Market, local_symbol: str):
    (inst,) = [i for i in market.instruments if i.contract.localSymbol == local_symbol]
    return inst


def ohlc(bar: Bar) -> tuple:
    return bar.open, bar.high, bar.low, bar.close


def aggregate(bars: list[Bar]) -> tuple:
    return bars[0].open, max(b.high for b in bars), min(b.low for b in bars), bars[-1].close


def ticks_of(values, tick) -> np.ndarray:
    """Prices as whole numbers of ticks; fails if any price is off the grid."""
    q = np.asarray(values, dtype=float) / tick
    assert np.allclose(q, np.rint(q), atol=1e-6), "price off the tick grid"
    return np.rint(q).astype(np.int64)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=1, speed=0, start=START)


def complete_bar(market: Market, inst, back: int = 2) -> Bar:
    """A complete native bar ``back`` bars before the one in progress (native size; months for BTC)."""
    spec = BarSpec(months=1) if inst.feed.kind == "M" else BarSpec(inst.bar_seconds)
    span = timedelta(days=400) if inst.feed.kind == "M" else timedelta(seconds=inst.bar_seconds * 12)
    what = "TRADES" if inst.has_trades else "MIDPOINT"
    return market.bars(inst, START - span, START, spec, what, False)[-1 - back]


def bar_end(inst, bar: Bar) -> datetime:
    if inst.feed.kind == "M":
        local = bar.time.astimezone(inst.tz)
        nxt = local.replace(year=local.year + local.month // 12, month=local.month % 12 + 1)
        return nxt.astimezone(UTC)
    if inst.bar_seconds == 86400:
        local = bar.time.astimezone(inst.tz)
        return datetime.combine(local.date() + timedelta(days=1), local.time(), inst.tz).astimezone(UTC)
    return bar.time + timedelta(seconds=inst.bar_seconds)


# --- real data replayed -----------------------------------------------------------------------------
def test_goog_daily_trades_bars_are_the_real_file(market):
    goog = by_local(market, "GOOG")
    got = market.bars(goog, START - timedelta(days=3653), START + timedelta(days=1), DAY, "TRADES", False)
    rows = real("GOOG_1d_2004-2013.csv")
    assert len(got) == len(rows)
    for bar, row in zip(got[:-1], rows.itertuples()):
        assert ohlc(bar) == (row.Open, row.High, row.Low, row.Close)
        assert bar.volume == row.Volume and bar.count > 0 and row.Low <= bar.wap <= row.High
    last, row = got[-1], rows.iloc[-1]
    assert last.open == row.Open and row.Low <= last.low <= last.high <= row.High
    assert 0 < last.volume < row.Volume                       # the day in progress, up to now
    # Bar times are bar starts in UTC: midnight New York of the replayed date; today's bar holds now.
    assert last.time.astimezone(NY).time() == datetime.min.time()
    assert last.time <= START < bar_end(goog, last)
    # The dates are the real ones shifted by a whole number of days: gaps (weekends) are kept.
    real_gaps = np.diff(rows.index.values).astype("timedelta64[D]").astype(int)
    ours = np.diff([b.time.astimezone(NY).date().toordinal() for b in got])
    assert (ours == real_gaps).all()


def test_eurusd_hourly_and_btc_monthly_are_the_real_files_on_their_grids(market):
    fx = by_local(market, "EUR.USD")
    got = market.bars(fx, START - timedelta(days=400), START + timedelta(hours=1), HOUR, "MIDPOINT", False)
    rows = real("EURUSD_1h_2017-2018.csv")
    assert len(got) == len(rows)
    for bar, row in zip(got[:-1:97], rows.iloc[:-1:97].itertuples()):
        assert ohlc(bar) == tuple(round_to_tick(x, 0.00005) for x in (row.Open, row.High, row.Low, row.Close))
        assert (bar.volume, bar.wap, bar.count) == (-1, -1, -1)
    btc = by_local(market, "BTC.USD")
    got = market.bars(btc, START - timedelta(days=366 * 14), START, BarSpec(months=1), "TRADES", False)
    rows = real("BTCUSD_1M_2012-2024.csv")
    assert len(got) == len(rows)
    for bar, row in zip(got[:-1], rows.iloc[:-1].itertuples()):
        assert ohlc(bar) == tuple(round_to_tick(x, 0.25) for x in (row.Open, row.High, row.Low, row.Close))
        assert bar.volume == pytest.approx(row.Volume, abs=1e-8)
        # monthly bars start at local midnight on the 1st (the file labels them by month end)
        local = bar.time.astimezone(btc.tz)
        assert (local.day, local.hour, local.minute) == (1, 0, 0)
    assert got[-1].time <= START < bar_end(btc, got[-1])


def test_derived_instruments_follow_their_stated_transformations(market):
    def daily(local):
        inst = by_local(market, local)
        return market.bars(inst, START - timedelta(days=3653), START, DAY, "TRADES", False)

    goog, aapl, msft, spx, spy, esz6 = (daily(s) for s in ("GOOG", "AAPL", "MSFT", "SPX", "SPY", "ESZ6"))
    rows = real("GOOG_1d_2004-2013.csv")
    # AAPL: GOOG scaled so its latest close is 230.00, on the 0.01 grid
    scale = 230.0 / rows.Close.iloc[-1]
    for g, a in zip(goog[-30:-1], aapl[-30:-1]):
        assert ohlc(a) == tuple(round_to_tick(x * scale, 0.01) for x in ohlc(g))
    assert aapl[-2].time == goog[-2].time
    # MSFT and SPX: other windows (rotations) of the same history, latest close at their levels
    assert len(msft) == len(spx) == len(goog)
    assert abs(msft[-1].open / 420.0 - 1) < 0.2 and abs(spx[-1].open / 5900.0 - 1) < 0.2
    assert [b.close for b in msft[-20:-1]] != [b.close for b in aapl[-20:-1]]
    # SPY = SPX / 10 and ES = SPX x (1 + carry), bar by bar
    spx_by_date = {b.time.astimezone(ZoneInfo("US/Central")).date(): b for b in spx}
    days_to_expiry = (datetime(2026, 12, 18).date() - START.astimezone(ZoneInfo("US/Central")).date()).days
    carry = 1 + 0.03 * days_to_expiry / 365
    for y, e in zip(spy[-20:-1], esz6[-20:-1]):
        s = spx_by_date[y.time.astimezone(NY).date()]
        assert abs(y.close - s.close / 10) <= 0.0051               # both rounded from one value
        assert abs(e.close - s.close * carry) <= 0.125 + 0.006
        assert on_tick_grid(e.close, 0.25) and on_tick_grid(e.high, 0.25)


def test_the_replay_continues_after_the_last_real_bar_continuously():
    clock = FakeClock()
    mk = Market(seed=1, speed=86400, start=START, clock=clock)    # one replayed day per real second
    goog = by_local(mk, "GOOG")
    clock.t += 5.0
    bars = mk.bars(goog, START - timedelta(days=3), mk.now(), DAY, "TRADES", False)
    rows = real("GOOG_1d_2004-2013.csv")
    growth = rows.Close.iloc[-1] / rows.Open.iloc[0]
    i = [b.time.astimezone(NY).date() for b in bars].index(START.astimezone(NY).date())
    assert ohlc(bars[i])[:3] == (rows.Open.iloc[-1], rows.High.iloc[-1], rows.Low.iloc[-1])
    restart = bars[i + 1]          # the first real bar again, scaled so the price is continuous
    assert restart.open == round_to_tick(rows.Open.iloc[0] * growth, 0.01) == bars[i].close
    assert ohlc(restart) == tuple(round_to_tick(x * growth, 0.01) for x in rows.iloc[0][:4])
    assert restart.volume == rows.Volume.iloc[0]


@settings(max_examples=25, deadline=None)
@given(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2031, 12, 31), timezones=st.just(UTC)))
def test_the_latest_bar_contains_the_start_time(start):
    mk = Market(seed=3, speed=0, start=start)
    for local in ("GOOG", "SPX", "EUR.USD", "BTC.USD"):
        inst = by_local(mk, local)
        spec = BarSpec(months=1) if inst.feed.kind == "M" else BarSpec(inst.bar_seconds)
        what = "TRADES" if inst.has_trades else "MIDPOINT"
        bars = mk.bars(inst, start - timedelta(days=70), start + timedelta(days=1), spec, what, False)
        assert bars[-1].time <= start < bar_end(inst, bars[-1]), local
        q = mk.quote(inst)
        assert q.low <= (q.last if q.last is not None else q.mid) <= q.high


# --- the tick generator -----------------------------------------------------------------------------
@pytest.mark.parametrize("local", ["GOOG", "AAPL", "ESZ6", "SPX", "EUR.USD", "BTC.USD"])
def test_ticks_of_a_bar_hit_open_high_low_close_on_the_grid_and_inside(market, local):
    inst = by_local(market, local)
    tick = inst.min_tick
    if inst.feed.kind == "M":   # a monthly bar's ticks live in its days: take one complete day
        bar = market.bars(inst, START - timedelta(days=3), START, DAY, "TRADES", False)[-2]
        end = bar.time + timedelta(days=1)
    else:
        bar = complete_bar(market, inst)
        end = bar_end(inst, bar)
    path = market.tick_path(inst, bar.time, end)
    assert len(path) == (end - bar.time).total_seconds()
    price = path["last"] if inst.has_trades else (path["bid"] + path["ask"]) / 2
    p = ticks_of(price, tick)
    o, h, l, c = ticks_of(ohlc(bar), tick)
    assert (p[0], p.max(), p.min(), p[-1]) == (o, h, l, c)
    assert p[1] == o and ((l <= p) & (p <= h)).all()
    assert (np.abs(np.diff(p)) > 0).sum() > 50                 # it moves, inside the bar
    if inst.has_quotes:
        bid, ask = ticks_of(path["bid"], tick), ticks_of(path["ask"], tick)
        assert ((ask - bid) == inst.feed.spread).all()
        if inst.has_trades:                                    # every trade is at the bid or the ask
            assert ((p == bid) | (p == ask)).all() and (p == bid).any() and (p == ask).any()
        assert (path["bid_size"] > 0).all() and (path["ask_size"] > 0).all()


@settings(max_examples=60, deadline=None)
@given(n=st.sampled_from([6, 7, 61, 600, 3600, 23 * 3600]), seed=st.integers(0, 2**40),
       prices=st.lists(st.integers(0, 3000), min_size=4, max_size=4))
def test_the_generator_keeps_its_invariants(n, seed, prices):
    """Any leaf: anchors hit, high/low so far = running max/min, new highs at the bid, new lows at
    the ask, and any second computed alone equals the same second computed in a range."""
    l, a, b, h = sorted(prices)
    o, c = (a, b) if seed % 2 else (b, a)
    leaf = tk.Leaf.make(n, o, h, l, c, tk.key_of(seed))
    p = tk.path_range(leaf, 0, n)
    assert (p.price[0], p.price[-1], p.price.max(), p.price.min()) == (o, c, h, l)
    assert p.price[leaf.ih[0]] == h and p.price[leaf.il[0]] == l
    assert (np.maximum.accumulate(p.price) == p.hi).all() and (np.minimum.accumulate(p.price) == p.lo).all()
    new_high = np.flatnonzero(np.diff(p.hi) > 0) + 1
    new_low = np.flatnonzero(np.diff(p.lo) < 0) + 1
    assert p.at_bid[new_high].all() and not p.at_bid[new_low].any() and p.at_bid[0] and not p.at_bid[1]
    s = np.random.default_rng(seed).integers(0, n, 64)
    alone = tk.path_at(leaf.take(np.zeros(len(s), dtype=int)), s)
    assert (alone.price == p.price[s]).all() and (alone.at_bid == p.at_bid[s]).all()
    assert (alone.hi == p.hi[s]).all() and (alone.lo == p.lo[s]).all()
    s0 = int(s[0])
    assert (tk.path_range(leaf, s0, n).price == p.price[s0:]).all()


def test_same_seed_same_ticks_other_seed_other_path_same_anchors():
    a, b, other = (Market(seed=s, speed=0, start=START) for s in (1, 1, 2))
    for local in ("GOOG", "EUR.USD"):
        bar = complete_bar(a, by_local(a, local))
        end = bar.time + timedelta(hours=1)
        pa, pb, po = (m.tick_path(by_local(m, local), bar.time, end) for m in (a, b, other))
        pd.testing.assert_frame_equal(pa, pb)
        assert not pa["bid"].equals(po["bid"])
        assert ohlc(complete_bar(other, by_local(other, local))) == ohlc(bar)
    q1, q2 = (m.quotes(m.instruments) for m in (a, b))
    assert q1 == q2


# --- bars at every size agree -----------------------------------------------------------------------
def test_fine_trades_bars_aggregate_to_the_real_daily_bar(market):
    goog = by_local(market, "GOOG")
    rows = real("GOOG_1d_2004-2013.csv")
    day = complete_bar(market, goog)           # the real bar of 2013-02-27
    row = rows.iloc[-3]
    assert (*ohlc(day), day.volume) == (row.Open, row.High, row.Low, row.Close, row.Volume)
    end = bar_end(goog, day)
    for spec in (MINUTE, BarSpec(5), HOUR, BarSpec(1800)):
        fine = market.bars(goog, day.time, end, spec, "TRADES", False)
        assert len(fine) == math.ceil((end - day.time).total_seconds() / spec.seconds)
        assert aggregate(fine) == ohlc(day)
        assert sum(b.volume for b in fine) == row.Volume
        assert sum(b.count for b in fine) == day.count
        assert all(b.low <= b.wap <= b.high for b in fine)
    # and the day in progress: its 1-min bars up to now make today's partial daily bar
    today = market.bars(goog, START - timedelta(hours=20), START, DAY, "TRADES", False)[-1]
    fine = market.bars(goog, today.time, START + timedelta(days=1), MINUTE, "TRADES", False)
    assert fine[-1].time <= START < fine[-1].time + timedelta(minutes=1)
    assert aggregate(fine) == ohlc(today) and sum(b.volume for b in fine) == today.volume


@pytest.mark.parametrize("what", ["MIDPOINT", "BID", "ASK", "BID_ASK"])
def test_quote_bars_agree_across_sizes(market, what):
    """MIDPOINT/BID/ASK of a real bar are its trade OHLC shifted by half / whole spreads: the highs
    trade at the bid and the lows at the ask, so max bid = H, min ask = L, max ask = H + spread."""
    for local in ("AAPL", "ESZ6", "EUR.USD"):
        inst = by_local(market, local)
        sp, tick = inst.feed.spread * inst.min_tick, inst.min_tick
        ref = complete_bar(market, inst) if inst.has_trades else None
        coarse_spec = BarSpec(inst.bar_seconds)
        coarse = market.bars(inst, START - timedelta(days=3), START, coarse_spec, what, False)
        for day in (coarse[-2], coarse[-1]):                          # complete and in progress
            fine = market.bars(inst, day.time, day.time + timedelta(seconds=inst.bar_seconds), MINUTE, what,
                               False)
            assert max(b.high for b in fine) == day.high and min(b.low for b in fine) == day.low
            if what != "BID_ASK":
                assert (fine[0].open, fine[-1].close) == (day.open, day.close)
                assert all(on_tick_grid(x, tick) for b in fine for x in ohlc(b))
            assert (day.volume, day.wap, day.count) == (-1, -1, -1)
        if ref is not None and what in ("BID", "ASK"):
            same = market.bars(inst, ref.time, ref.time + timedelta(seconds=1), coarse_spec, what, False)[0]
            if what == "BID":
                assert same.high == ref.high and same.low == pytest.approx(ref.low - sp)
            else:
                assert same.low == ref.low and same.high == pytest.approx(ref.high + sp)


def test_btc_days_and_hours_make_its_months(market):
    btc = by_local(market, "BTC.USD")
    months = market.bars(btc, START - timedelta(days=70), START, BarSpec(months=1), "TRADES", False)
    for month in months[-2:]:
        end = bar_end(btc, month) if month is not months[-1] else START + timedelta(days=1)
        days = market.bars(btc, month.time, end, DAY, "TRADES", False)
        assert aggregate(days) == ohlc(month)
        assert sum(d.volume for d in days) == pytest.approx(month.volume, abs=1e-7)
    day = market.bars(btc, START - timedelta(days=2), START, DAY, "TRADES", False)[-2]
    hours = market.bars(btc, day.time, day.time + timedelta(days=1), HOUR, "TRADES", False)
    assert len(hours) == 24 and aggregate(hours) == ohlc(day)
    weeks = market.bars(btc, START - timedelta(days=60), START, BarSpec(604800), "TRADES", False)
    assert all(w.time.astimezone(btc.tz).weekday() == 0 for w in weeks)


def test_weekly_and_monthly_bars_resample_the_daily_ones(market):
    goog = by_local(market, "GOOG")
    days = market.bars(goog, START - timedelta(days=120), START, DAY, "TRADES", False)
    weeks = market.bars(goog, START - timedelta(days=120), START, BarSpec(604800), "TRADES", False)
    months = market.bars(goog, START - timedelta(days=120), START, BarSpec(months=1), "TRADES", False)
    for group, key in ((weeks, lambda d: d - timedelta(days=d.weekday())), (months, lambda d: d.replace(day=1))):
        for bar in group[1:]:
            start = bar.time.astimezone(NY).date()
            members = [d for d in days if key(d.time.astimezone(NY).date()) == start]
            assert aggregate(members) == ohlc(bar) and sum(d.volume for d in members) == bar.volume


def test_bars_never_pass_now_and_follow_the_clock():
    clock = FakeClock()
    mk = Market(seed=1, speed=1.0, start=START, clock=clock)
    aapl = by_local(mk, "AAPL")
    before = mk.bars(aapl, START - timedelta(minutes=10), START + timedelta(hours=1), MINUTE, "TRADES", False)
    assert before[-1].time <= START < before[-1].time + timedelta(minutes=1)
    clock.t += 150
    after = mk.bars(aapl, START - timedelta(minutes=10), START + timedelta(hours=1), MINUTE, "TRADES", False)
    assert len(after) == len(before) + 2 or len(after) == len(before) + 3
    assert after[-1].time <= mk.now() < after[-1].time + timedelta(minutes=1)
    secs = mk.bars(aapl, mk.now() - timedelta(seconds=2000), mk.now() + timedelta(hours=1), BarSpec(1), "TRADES",
                   False)
    assert len(secs) == 2000 and secs[-1].time == mk.now().replace(microsecond=0)


def test_use_rth_keeps_intraday_bars_to_liquid_hours(market):
    aapl = by_local(market, "AAPL")
    window = (START - timedelta(days=3), START)
    rth = market.bars(aapl, *window, HOUR, "TRADES", True)
    every = market.bars(aapl, *window, HOUR, "TRADES", False)
    local = [b.time.astimezone(NY) for b in rth]
    assert all((9, 30) <= (t.hour, t.minute) < (16, 0) for t in local)
    whole_days = sorted({t.date() for t in local})[1:]          # the window starts mid-session
    assert whole_days and all(min(t for t in local if t.date() == d).strftime("%H:%M") == "09:30"
                              for d in whole_days)
    assert len(every) > len(rth) > 0
    # daily bars are the real (regular-session) bars either way
    assert market.bars(aapl, *window, DAY, "TRADES", True) == market.bars(aapl, *window, DAY, "TRADES", False)


def test_what_to_show_an_instrument_lacks_is_a_clear_error(market):
    with pytest.raises(ValueError, match="TRADES.*FX has no trades"):
        market.bars(by_local(market, "EUR.USD"), START - timedelta(hours=2), START, MINUTE, "TRADES", False)
    with pytest.raises(ValueError, match="index has no bid/ask"):
        market.bars(by_local(market, "SPX"), START - timedelta(hours=2), START, MINUTE, "MIDPOINT", False)
    with pytest.raises(ValueError, match="offers TRADES, MIDPOINT"):
        market.bars(by_local(market, "GOOG"), START - timedelta(hours=2), START, MINUTE, "OPTION_IMPLIED_VOLATILITY",
                    False)
    spx = market.bars(by_local(market, "SPX"), START - timedelta(hours=2), START, MINUTE, "TRADES", False)
    assert spx and all((b.volume, b.count) == (0, 0) for b in spx)
    with pytest.raises(ValueError):
        BarSpec()


# --- quotes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("local", ["GOOG", "ESZ6", "SPX", "EUR.USD", "BTC.USD"])
def test_a_quote_is_the_tick_path_and_the_day_so_far(market, local):
    inst = by_local(market, local)
    tz = inst.tz
    day_start = datetime.combine(START.astimezone(tz).date(), datetime.min.time(), tz).astimezone(UTC)
    path = market.tick_path(inst, day_start, START)          # seconds up to the one holding START
    q = market.quote(inst)
    row = path.iloc[-1]
    assert path.index[-1] == pd.Timestamp(START.replace(microsecond=0))
    for name in ("bid", "ask", "last", "last_size", "volume", "bid_size", "ask_size"):
        mine = getattr(q, name)
        assert (mine is None and math.isnan(row[name])) or mine == row[name], name
    price = path["last"] if inst.has_trades else ((path["bid"] + path["ask"]) / 2).round(10)
    assert (q.open, q.high, q.low) == (price.iloc[0], price.max(), price.min())
    if inst.has_trades and inst.book.volume_unit:
        assert q.volume == pytest.approx(path["last_size"].sum(), abs=1e-7)
    # close is the previous day's close
    what = "TRADES" if inst.has_trades else "MIDPOINT"
    yesterday = market.bars(inst, day_start - timedelta(days=5), day_start, DAY, what, False)[-1]
    assert q.close == yesterday.close
    assert q.time == START


def test_quote_fields_by_security_type(market):
    q = {i.contract.localSymbol: market.quote(i) for i in market.instruments}
    fx, spx, goog, btc, es = q["EUR.USD"], q["SPX"], q["GOOG"], q["BTC.USD"], q["ESZ6"]
    assert fx.last is None and fx.last_size is None and fx.volume is None and fx.bid < fx.ask
    assert fx.bid_size >= 1_000_000 and fx.mid == (fx.bid + fx.ask) / 2 and 0.5 < fx.mid < 2
    assert spx.bid is None and spx.ask is None and spx.bid_size is None and spx.volume is None
    assert spx.mid == spx.last and 4000 < spx.last < 8000
    assert goog.bid_size % 100 == 0 and goog.ask_size % 100 == 0 and goog.last in (goog.bid, goog.ask)
    assert goog.volume > 0 and goog.last_size > 0
    assert 0 < btc.last_size < 1 and btc.last_size != round(btc.last_size, 4) and on_tick_grid(btc.last, 0.25)
    assert es.ask - es.bid == 0.5 and es.bid_size == int(es.bid_size)
    for quote in q.values():
        assert isinstance(quote, Quote) and quote.time == START and quote.low <= quote.high


def test_the_replay_clock_runs_at_speed_and_freezes_at_zero():
    clock = FakeClock()
    fast = Market(seed=1, speed=60.0, start=START, clock=clock)
    frozen = Market(seed=1, speed=0.0, start=START, clock=clock)
    assert fast.now() == START == frozen.now()
    clock.t += 2.5
    assert fast.now() == START + timedelta(seconds=150) and frozen.now() == START
    goog = by_local(fast, "GOOG")
    assert fast.quote(goog).time == START + timedelta(seconds=150)
    assert fast.quote(goog) == fast.quote(goog, START + timedelta(seconds=150))
    assert frozen.quote(by_local(frozen, "GOOG")) == fast.quote(goog, START)
    with pytest.raises(ValueError):
        Market(speed=-1)
    default = Market(speed=0)
    assert abs((default.now() - datetime.now(UTC)).total_seconds()) < 5


# --- instruments ------------------------------------------------------------------------------------
def test_lookup_rules(market):
    def one(c):
        got = market.lookup(c)
        assert len(got) == 1, (c, got)
        return got[0].contract.localSymbol

    assert one(contract(conId=265598)) == "AAPL"
    assert one(contract("WRONG", "CASH", conId=208813720)) == "GOOG"        # a known conId decides alone
    assert market.lookup(contract(conId=1)) == []
    assert one(contract("aapl", "STK")) == "AAPL"
    assert one(contract("AAPL", "STK", "SMART", "USD")) == one(contract("AAPL", "STK", "NASDAQ"))
    assert one(contract("AAPL", "STK", "ISLAND", primaryExchange="NASDAQ")) == "AAPL"
    assert one(contract("SPY", "STK", "ARCA")) == "SPY"
    assert market.lookup(contract("AAPL", "STK", currency="EUR")) == []
    assert market.lookup(contract("AAPL", "STK", primaryExchange="NYSE")) == []
    assert market.lookup(contract("AAPL", "STK", "IDEALPRO")) == []
    assert market.lookup(contract("AAPL", "OPT", strike=200.0, right="C")) == []
    assert market.lookup(contract("AAPL", "STK", strike=200.0)) == []
    assert one(contract("AAPL", "STK", secIdType="ISIN", secId="US0378331005")) == "AAPL"
    assert market.lookup(contract("ZZZZ", "STK", "SMART", "USD")) == []
    assert market.lookup(contract()) == []
    # FX: by symbol + currency, by local symbol, or by the pair as symbol
    assert one(contract("EUR", "CASH", "IDEALPRO", "USD")) == "EUR.USD"
    assert one(contract(sec_type="CASH", localSymbol="EUR.USD")) == "EUR.USD"
    assert one(contract("EUR.USD", "CASH")) == "EUR.USD"
    assert market.lookup(contract("EUR", "CASH", "IDEALPRO", "JPY")) == []
    # futures: two ES months are ambiguous until the expiry (YYYYMM or YYYYMMDD) or localSymbol says
    es = market.lookup(contract("ES", "FUT", "CME", "USD"))
    assert sorted(i.contract.localSymbol for i in es) == ["ESH7", "ESZ6"]
    assert one(contract("ES", "FUT", "CME", lastTradeDateOrContractMonth="202612")) == "ESZ6"
    assert one(contract("ES", "FUT", lastTradeDateOrContractMonth="20261218", multiplier="50")) == "ESZ6"
    assert one(contract(sec_type="FUT", localSymbol="ESH7")) == "ESH7"
    assert market.lookup(contract("ES", "FUT", lastTradeDateOrContractMonth="202612", multiplier="5")) == []
    assert market.lookup(contract("ES", "FUT", lastTradeDateOrContractMonth="2026")) == []
    assert one(contract("SPX", "IND", "CBOE")) == "SPX"
    assert one(contract("BTC", "CRYPTO", "PAXOS", "USD")) == "BTC.USD"
    assert market.lookup(contract("BTC", "CRYPTO", "SMART")) == []


def test_contract_details_are_complete(market):
    hours = r"^(\d{8}:(\d{4}-\d{8}:\d{4}|CLOSED))(;\d{8}:(\d{4}-\d{8}:\d{4}|CLOSED))*$"
    for inst in market.instruments:
        d, c = inst.details, inst.contract
        assert c.conId and c.symbol and c.secType and c.exchange and c.localSymbol
        assert c.currency == ("EUR" if c.primaryExchange == "IBIS" else "USD")       # SAP on Xetra: EUR
        assert c.tradingClass and d.marketName and d.longName and d.validExchanges and d.priceMagnifier == 1
        assert d.minTick > 0 and d.timeZoneId in ("US/Eastern", "US/Central", "MET")
        assert pd.Series([d.tradingHours, d.liquidHours]).str.match(hours).all(), d.tradingHours
        assert d.minSize > 0 and d.sizeIncrement > 0 and d.suggestedSizeIncrement > 0
        if c.secType != "IND":
            assert {"LMT", "MKT"} <= set(d.orderTypes.split(","))
        assert market.by_con_id(c.conId) is inst
    goog = by_local(market, "GOOG").details
    assert (goog.contract.conId, goog.contract.primaryExchange, goog.minTick) == (208813720, "NASDAQ", 0.01)
    assert goog.stockType == "COMMON" and goog.industry and len(goog.marketRuleIds.split(",")) == len(
        goog.validExchanges.split(","))
    spy = by_local(market, "SPY").details
    assert (spy.contract.conId, spy.contract.primaryExchange, spy.stockType) == (756733, "ARCA", "ETF")
    es = by_local(market, "ESZ6")
    assert (es.contract.multiplier, es.multiplier, es.min_tick, es.contract.tradingClass) == ("50", 50.0, 0.25, "ES")
    assert es.contract.lastTradeDateOrContractMonth == "20261218" and es.details.contractMonth == "202612"
    btc = by_local(market, "BTC.USD")
    assert (btc.con_id, btc.min_tick, btc.contract.exchange, btc.bar_seconds) == (479624278, 0.25, "PAXOS", 2592000)
    spx = by_local(market, "SPX")
    assert (spx.con_id, spx.has_quotes, spx.has_trades) == (416904, False, True)
    assert by_local(market, "MSFT").con_id == 272093 and by_local(market, "AAPL").multiplier == 1.0
    # the schedule is the replay's: a day listed CLOSED has no replayed daily bar, an open one has
    goog_inst = by_local(market, "GOOG")
    for part in goog_inst.details.tradingHours.split(";"):
        day = datetime.strptime(part[:8], "%Y%m%d").replace(tzinfo=NY)
        unit = day.date().toordinal()
        assert goog_inst.feed.open_on(np.array([unit]))[0] == (not part.endswith("CLOSED"))


def test_eurusd_details_match_the_recorded_contract_data(market):
    capture = Path(__file__).resolve().parent / "data" / "captures" / "contract_details_eurusd.txt"
    fields = capture.read_bytes().decode().replace("\\x00", "\x00").split("\x00")
    d = by_local(market, "EUR.USD").details
    for value in ("EUR", "CASH", "IDEALPRO", "EUR.USD", "12087792", d.orderTypes, "European Monetary Union Euro",
                  "US/Eastern", "3188"):
        assert value in fields
    assert (d.contract.conId, d.minTick, d.marketName, d.contract.tradingClass, d.aggGroup) == (
        12087792, 0.00005, "EUR.USD", "EUR.USD", 4)


def test_a_synthetic_universe_of_2000(capsys):
    with pytest.raises(ValueError):
        Market(synthetic=2001)
    t0 = time.perf_counter()
    mk = Market(seed=1, speed=0, start=START, synthetic=2000)
    built = time.perf_counter() - t0
    sims = [i for i in mk.instruments if i.symbol.startswith("SIM")]
    assert [i.con_id for i in sims] == list(range(SYNTHETIC_BASE + 1, SYNTHETIC_BASE + 2001))
    assert sims[0].symbol == "SIM0001" and sims[-1].symbol == "SIM2000"
    assert mk.lookup(contract("sim0042", "STK", "SMART", "USD")) == [sims[41]]
    assert all(i.contract.secType == "STK" and i.contract.exchange == "SMART" for i in sims)
    quotes = mk.quotes(sims[:1000])
    assert all(q.bid < q.ask and 5 < q.last < 800 for q in quotes)
    assert len({q.last for q in quotes}) > 500                       # seeded rotations and scales differ
    mk.quotes(sims[:1000])
    t0 = time.perf_counter()
    for _ in range(5):
        mk.quotes(sims[:1000])
    per_call = (time.perf_counter() - t0) / 5
    daily = mk.bars(sims[7], START - timedelta(days=3653), START, DAY, "TRADES", False)
    assert len(daily) == 2148 and 5 <= daily[-2].close <= 800      # latest close: seeded in 10 .. 500
    with capsys.disabled():
        print(f"\n[paper market] universe of {len(mk.instruments)} built in {built * 1000:.0f} ms; "
              f"quotes() for 1000 instruments: {per_call * 1000:.1f} ms")
    assert per_call < 0.5


def test_bar_timings(market, capsys):
    goog, fx = by_local(market, "GOOG"), by_local(market, "EUR.USD")
    cases = {
        "1 D of 1-min TRADES (GOOG)": lambda: market.bars(goog, START - timedelta(days=1), START, MINUTE, "TRADES",
                                                          False),
        "2000 1-sec TRADES (GOOG)": lambda: market.bars(goog, START - timedelta(seconds=2000), START, BarSpec(1),
                                                        "TRADES", False),
        "1 D of 1-min MIDPOINT (EUR.USD)": lambda: market.bars(fx, START - timedelta(days=1), START, MINUTE,
                                                               "MIDPOINT", False),
        "10 Y of daily TRADES (GOOG)": lambda: market.bars(goog, START - timedelta(days=3653), START, DAY, "TRADES",
                                                           False),
    }
    lines = []
    for name, run in cases.items():
        run()
        t0 = time.perf_counter()
        got = run()
        dt = time.perf_counter() - t0
        lines.append(f"{name}: {len(got)} bars in {dt * 1000:.1f} ms")
        assert dt < 2.0
    with capsys.disabled():
        print("\n[paper market] " + "; ".join(lines))


# --- tick grid helpers ------------------------------------------------------------------------------
def test_round_to_tick_and_on_tick_grid():
    assert round_to_tick(100.3449, 0.01) == 100.34 and round_to_tick(1.082731, 0.00005) == 1.08275
    assert round_to_tick(5900.13, 0.25) == 5900.25 and round_to_tick(100.34, 0.01) == 100.34
    assert repr(round_to_tick(0.1 + 0.2, 0.01)) == "0.3"
    assert on_tick_grid(1.08275, 0.00005) and not on_tick_grid(1.08276, 0.00005)
    assert on_tick_grid(5900.25, 0.25) and not on_tick_grid(5900.1, 0.25) and on_tick_grid(806.19, 0.01)


@settings(max_examples=200, deadline=None)
@given(price=st.floats(0.0001, 1e6), tick=st.sampled_from([0.01, 0.25, 0.00005, 0.0001, 0.005, 0.5]))
def test_round_to_tick_lands_on_the_grid(price, tick):
    r = round_to_tick(price, tick)
    assert on_tick_grid(r, tick) and abs(r - price) <= tick / 2 + 1e-9 * max(1.0, price)
    assert round_to_tick(r, tick) == r


# --- futures roll with the date the gateway runs on --------------------------------------------------
CT = ZoneInfo("US/Central")
ROLL = [   # (gateway start, the ES contracts listed: localSymbol and last trade date), by hand from CME's calendar
    (datetime(2026, 11, 20, 15, 45, tzinfo=UTC), [("ESZ6", "20261218"), ("ESH7", "20270319")]),
    (datetime(2026, 12, 18, 8, 29, tzinfo=CT), [("ESZ6", "20261218"), ("ESH7", "20270319")]),   # a minute left
    (datetime(2026, 12, 18, 8, 30, tzinfo=CT), [("ESH7", "20270319"), ("ESM7", "20270618")]),   # expired at 08:30
    (datetime(2026, 12, 19, 0, 0, 30, tzinfo=UTC), [("ESH7", "20270319"), ("ESM7", "20270618")]),
    (datetime(2027, 3, 13, 15, 0, tzinfo=UTC), [("ESH7", "20270319"), ("ESM7", "20270618")]),   # a Saturday
    (datetime(2029, 12, 31, 23, 0, tzinfo=UTC), [("ESH0", "20300315"), ("ESM0", "20300621")]),
    (datetime(2030, 1, 2, 14, 30, tzinfo=UTC), [("ESH0", "20300315"), ("ESM0", "20300621")]),
    (datetime(2031, 9, 19, 13, 0, tzinfo=UTC), [("ESU1", "20310919"), ("ESZ1", "20311219")]),   # 08:00 CDT
]


@pytest.mark.parametrize("start, listed", ROLL, ids=[f"{s:%Y-%m-%d %H:%M%z}" for s, _ in ROLL])
def test_es_contracts_are_the_quarterlies_not_yet_expired_at_the_start(start, listed):
    market = Market(seed=1, speed=0, start=start)
    es = sorted((i for i in market.instruments if i.sec_type == "FUT"),
                key=lambda i: i.contract.lastTradeDateOrContractMonth)
    assert [(i.contract.localSymbol, i.contract.lastTradeDateOrContractMonth) for i in es] == listed
    for inst in es:
        ltd = inst.contract.lastTradeDateOrContractMonth
        assert datetime.strptime(ltd, "%Y%m%d").weekday() == 4 and 15 <= int(ltd[6:]) <= 21   # third Friday
        assert inst.details.contractMonth == ltd[:6] and inst.details.realExpirationDate == ltd
        assert inst.con_id == 899_000_000 + (int(ltd[:4]) - 2000) * 100 + int(ltd[4:6])
        assert market.by_con_id(inst.con_id) is inst
        quote = market.quote(inst)
        assert quote.bid > 0 and on_tick_grid(quote.bid, 0.25)
    # an expired month is not listed at all: IB answers 200 for it
    expired = contract("ES", "FUT", "CME", lastTradeDateOrContractMonth="202612")
    assert bool(market.lookup(expired)) == (listed[0][1] == "20261218")


def test_an_expired_future_gets_ibs_200_from_the_gateway():
    from addin.paper import PaperGateway

    from .ibclient import IBTestClient
    with PaperGateway(port=0, speed=0, start=datetime(2026, 12, 19, 0, 0, 30, tzinfo=UTC)) as gw:
        ib = IBTestClient().start(gw.port, 5)
        try:
            rid, start = ib.next_req(), ib.mark()
            ib.reqContractDetails(rid, contract("ES", "FUT", "CME", "USD", lastTradeDateOrContractMonth="202612"))
            err = ib.wait_for("error", lambda e: e[0] == rid, start=start)
            assert err[2] == 200
            rid, start = ib.next_req(), ib.mark()
            ib.reqContractDetails(rid, contract("ES", "FUT", "CME", "USD"))
            listed = [e[1].contract.localSymbol for e in ib.collect("contractDetails", "contractDetailsEnd", rid,
                                                                     start=start)]
            assert sorted(listed) == ["ESH7", "ESM7"]
        finally:
            ib.stop()
