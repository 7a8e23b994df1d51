"""The deterministic tick generator: the price path, second by second, inside one real bar.

Everything here is pure numpy and works in integer *ticks* (price / minTick), so every value is on
the contract's tick grid by construction. One call evaluates many instruments at one second each
(quotes) or one bar at many consecutive seconds (bars, tick paths); both give identical numbers.

A *leaf* is one bar whose seconds are generated directly: a daily bar (GOOG and everything derived
from it), an hourly bar (EUR.USD), or one calendar day inside a monthly bar (BTC; see
:func:`split_days`). A leaf of ``n`` seconds with real ``O, H, L, C`` is drawn like this:

* Anchors: seconds 0 and 1 trade at O, a seeded second at H and another at L (both in [2, n-2]),
  the last second n-1 at C. Which extreme comes first is seeded (the one nearer the open more
  likely); the legs between anchors get time in proportion to the distance they travel.
* Trend runs: from O to the first extreme, and from where the way to the second extreme crosses O,
  the path makes new highs (lows) at about one record every 300 s, at levels along a seeded warped
  curve (uneven steps); between records it pulls back by a seeded amount and then climbs
  monotonically to the next record. Elsewhere (free stretches) it is the straight line between the
  anchors plus multi-scale value noise that tapers to zero at both ends, reflected off the bounds.
* The high and low *so far* (``Mt``, ``mt``) are known in closed form at any second: they are the last
  record (or the climbing price), the open, or an anchor. The path never leaves [mt, Mt] and touches
  Mt at every new high and mt at every new low, so O(1) per second, no scan of earlier seconds.
* All randomness is a splitmix64 hash of (seed, instrument stream, bar, second).

Trade side: second 0 and every new high trade at the bid, second 1 and every new low at the ask,
other seconds at a seeded side. With a spread of ``sp`` ticks (ask = bid + sp) that makes the
BID/ASK/MIDPOINT extremes of any bar prefix exact too (see ``market.py``):
max bid = Mt, min ask = mt, max ask = Mt + sp, min bid = mt - sp (from second 1 on).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U64 = np.uint64
_GOLDEN = U64(0x9E3779B97F4A7C15)
_MUL1 = U64(0xBF58476D1CE4E5B9)
_MUL2 = U64(0x94D049BB133111EB)
_SPREAD_X = U64(0xD6E8FEB86659FD93)

# Salts: independent hash streams for the different random choices.
SALT_HIGH, SALT_LOW, SALT_SIDE, SALT_SIZE, SALT_LEG, SALT_NOISE = 11, 12, 13, 14, 15, 100
SALT_DAY_HIGH, SALT_DAY_LOW, SALT_DAY_NOISE, SALT_DAY_EXC_H, SALT_DAY_EXC_L = 21, 22, 23, 24, 25

# Noise octaves (seconds) and their weights: sqrt(width) like the spread of a random walk over
# that horizon. Octaves longer than the bar are left out.
_WIDTHS = (2, 8, 32, 128, 512, 2048, 8192, 32768)
FREE_CAP = 0.35      # free noise at most this fraction of the envelope width
FREE_VOL = 1.0       # ... and at most FREE_VOL * sigma * sqrt(segment length)
RECORD_VOL = 1.0     # pull-backs in a trend at most RECORD_VOL * sigma * sqrt(their length)
RECORD_SPACING = 300.0  # seconds between two new highs (lows) of a trend, on average
CLIMB = 0.3          # the last 30% of that time climbs monotonically to the next record
_EPS = 1e-9


# --- hashing ----------------------------------------------------------------------------------------
def splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of a uint64 array (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> U64(30))) * _MUL1
    z = (z ^ (z >> U64(27))) * _MUL2
    return z ^ (z >> U64(31))


def mix(key, x) -> np.ndarray:
    """Hash of (key, x): uint64 array shaped like the broadcast of ``key`` and ``x``.

    key: uint64 array or int; x: integer array or int (negative values wrap, which is fine)."""
    k = np.atleast_1d(np.asarray(key, dtype=np.uint64))
    v = np.atleast_1d(np.asarray(x, dtype=np.int64)).astype(np.uint64)
    return splitmix(k ^ (v * _SPREAD_X))


def unit01(h: np.ndarray) -> np.ndarray:
    """uint64 hash -> float in [0, 1)."""
    return (h >> U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def signed(h: np.ndarray) -> np.ndarray:
    """uint64 hash -> float in [-1, 1)."""
    return unit01(h) * 2.0 - 1.0


def key_of(*parts: int | str) -> int:
    """A 64-bit key from ints and strings (BLAKE2b of their text: stable across runs and platforms)."""
    text = "\x1f".join(f"{type(p).__name__}:{p}" for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


# --- noise ------------------------------------------------------------------------------------------
def _smooth(f: np.ndarray) -> np.ndarray:
    return f * f * (3.0 - 2.0 * f)


def noise_at(key: np.ndarray, s: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Multi-octave value noise in [-1, 1] at scattered seconds.

    key: uint64 (E,) leaf keys; s: int64 (E,) seconds; n: int64 (E,) leaf lengths.
    Same arithmetic, term by term, as :func:`noise_range`, so both agree to the last bit."""
    acc = np.zeros(s.shape)
    wsum = np.zeros(s.shape)
    for j, w in enumerate(_WIDTHS):
        weight = np.where(n >= w, np.sqrt(w), 0.0)
        if not weight.any():
            break
        kk = mix(key, SALT_NOISE + j)
        cell = s // w
        g0 = signed(mix(kk, cell))
        g1 = signed(mix(kk, cell + 1))
        acc += weight * g0 + (weight * (g1 - g0)) * _ramp(w)[s - cell * w]
        wsum += weight
    return acc / np.maximum(wsum, 1e-300)


_RAMPS: dict[int, np.ndarray] = {}


def _ramp(w: int, length: int = 0) -> np.ndarray:
    """smoothstep(k / w) for k = 0 .. length-1, periodic in w (cached)."""
    have = _RAMPS.get(w)
    if have is None or len(have) < max(length, w):
        period = np.arange(w) / w
        period = period * period * (3.0 - 2.0 * period)
        have = np.tile(period, max(length, w, 1 << 17) // w + 2)
        _RAMPS[w] = have
    return have


def noise_range(key: int, s0: int, s1: int, n: int) -> np.ndarray:
    """The same noise as :func:`noise_at` for one leaf at the consecutive seconds [s0, s1).
    Lattice values are hashed once per cell and spread with np.repeat instead of gathered."""
    count = s1 - s0
    acc = np.zeros(count)
    wsum = 0.0
    for j, w in enumerate(_WIDTHS):
        if n < w:
            break
        weight = np.sqrt(w)
        kk = mix(key, SALT_NOISE + j)
        c0 = s0 // w
        g = signed(mix(kk, np.arange(c0, (s1 - 1) // w + 2, dtype=np.int64)))
        lo = s0 - c0 * w
        base = np.repeat(weight * g[:-1], w)[lo:lo + count]
        slope = np.repeat(weight * np.diff(g), w)[lo:lo + count]
        acc += base + slope * _ramp(w, lo + count)[lo:lo + count]
        wsum += weight
    return acc / max(wsum, 1e-300)


def day_noise(key: int, j: np.ndarray) -> np.ndarray:
    """Smooth noise in [-1, 1] over day indices (octaves of 1, 3 and 9 days)."""
    acc = np.zeros(j.shape)
    wsum = 0.0
    for i, w in enumerate((1, 3, 9)):
        kk = mix(key, SALT_DAY_NOISE * 10 + i)
        cell = j // w
        f = _smooth((j - cell * w) / w)
        g0, g1 = signed(mix(kk, cell)), signed(mix(kk, cell + 1))
        acc += np.sqrt(w) * (g0 + (g1 - g0) * f)
        wsum += np.sqrt(w)
    return acc / wsum


# --- leaves -----------------------------------------------------------------------------------------
@dataclass
class Leaf:
    """Bars whose seconds are generated directly. All arrays share one shape (E,) or broadcast.

    n: seconds in the bar (>= 6); o, h, l, c: real prices in ticks (l <= o, c <= h);
    key: uint64 seed of the bar; ih, il: seconds of the high and the low (distinct, in [2, n-2])."""

    n: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    key: np.ndarray
    ih: np.ndarray
    il: np.ndarray

    @classmethod
    def make(cls, n, o, h, l, c, key) -> "Leaf":
        n = np.atleast_1d(np.asarray(n, dtype=np.int64))
        key = np.atleast_1d(np.asarray(key, dtype=np.uint64))
        if (n < 6).any():
            raise ValueError("a generated bar needs at least 6 seconds")
        as64 = lambda a: np.atleast_1d(np.asarray(a, dtype=np.int64))  # noqa: E731
        o, h, l, c = as64(o), as64(h), as64(l), as64(c)
        ih, il = _anchor_seconds(n, o, h, l, c, key)
        return cls(n, o, h, l, c, key, ih, il)

    FIELDS = ("n", "o", "h", "l", "c", "key", "ih", "il")

    def take(self, idx) -> "Leaf":
        return Leaf(*(getattr(self, f)[idx] for f in self.FIELDS))

    @property
    def sigma(self) -> np.ndarray:
        """Noise scale in ticks per sqrt(second): the bar's range over sqrt(its length)."""
        return (self.h - self.l) / np.sqrt(self.n)


def _anchor_seconds(n, o, h, l, c, key) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of the high and the low: distinct, in [2, n-2].

    Which comes first is seeded, the nearer extreme to the open more likely (an open near the low
    tends to make the low first). The three legs open -> first extreme -> second -> close get time in
    proportion to the distance they travel plus a quarter of the whole, each weighted by a seeded
    factor in [0.6, 1.4]: a low one tick under the open is not reached only at the end of the day."""
    u = [unit01(mix(key, salt)) for salt in (SALT_HIGH, SALT_LOW, SALT_LEG, SALT_LEG + 1, SALT_LEG + 2)]
    rng = (h - l).astype(np.float64)
    low_first = u[0] < np.where(rng > 0, (h - o) / np.maximum(rng, 1), 0.5)
    first = np.where(low_first, l, h)
    legs = np.stack([np.abs(o - first), rng, np.abs(np.where(low_first, h, l) - c)]).astype(np.float64)
    weights = (legs + 0.25 * legs.sum(axis=0) + 1e-9) * (0.6 + 0.8 * np.stack(u[2:]))
    cum = np.cumsum(weights, axis=0) / weights.sum(axis=0)
    span = (n - 4).astype(np.float64)
    a = 2 + np.floor(cum[0] * span).astype(np.int64)
    b = np.minimum(np.maximum(2 + np.floor(cum[1] * span).astype(np.int64), a + 1), n - 2)
    a = np.minimum(a, b - 1)
    return np.where(low_first, b, a), np.where(low_first, a, b)


@dataclass
class Path:
    """The generated state at given seconds (arrays of one shape, prices in ticks).

    price: the trade price (for CASH: the midpoint); hi, lo: high and low of the leaf so far
    (inclusive of this second); at_bid: the trade of this second was at the bid (else the ask)."""

    price: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    at_bid: np.ndarray


_WARP_CELLS = 32
SALT_WARP = 31
SALT_DIP = 41


def _warp(key: np.ndarray, run: np.ndarray, *us: np.ndarray) -> list[np.ndarray]:
    """A seeded monotone map of [0, 1] onto itself (F(0) = 0, F(1) = 1), evaluated at each array of
    ``us``, per element.

    Its derivative (the speed of a trend) is piecewise linear between 33 knots with random values
    0.05 + U^3 (bursty), so a trend advances in spurts and pauses instead of in a straight line.
    key: leaf keys (E,) or one key (1,); run: 0 or 1 per element (which of the leaf's two trend runs
    the map is for)."""
    G = _WARP_CELLS
    knots = np.arange(G + 1, dtype=np.int64)[None, :]
    key = np.asarray(key, dtype=np.uint64)
    salted: np.ndarray
    if key.size == 1:   # one leaf: a table per run, rows picked by run
        salted = (key.reshape(1) ^ U64(SALT_WARP)) + np.arange(2, dtype=np.uint64)
        row = run.astype(np.int64)
    else:               # one leaf per element: each element's own table
        salted = (key ^ U64(SALT_WARP)) + run.astype(np.uint64)
        row = np.arange(len(key))
    d = 0.05 + unit01(mix(salted.reshape(-1, 1), knots)) ** 3                          # (R, G+1)
    area = np.concatenate([np.zeros((len(d), 1)), np.cumsum((d[:, :-1] + d[:, 1:]) / 2, axis=1)], axis=1)
    total = area[row, G]
    out = []
    for u in us:
        x = u * G
        i = np.clip(np.floor(x).astype(np.int64), 0, G - 1)
        t = x - i
        d0, d1 = d[row, i], d[row, i + 1]
        out.append(np.minimum((area[row, i] + d0 * t + (d1 - d0) * t * t / 2) / total, 1.0))
    return out


def _geometry(lf: Leaf) -> dict:
    """Per leaf: the order of the anchors and where segment 1 crosses the open (float ticks)."""
    up = lf.ih < lf.il                                   # the high comes first
    A = np.where(up, lf.h, lf.l).astype(np.float64)
    Bv = np.where(up, lf.l, lf.h).astype(np.float64)
    a = np.minimum(lf.ih, lf.il)
    b = np.maximum(lf.ih, lf.il)
    o = lf.o.astype(np.float64)
    cross = a + (o - A) / np.where(Bv == A, 1.0, Bv - A) * (b - a)
    return dict(up=up, a=a, b=b, A=A, Bv=Bv, o=o, c=lf.c.astype(np.float64), hi=lf.h.astype(np.float64),
                lo=lf.l.astype(np.float64), n=lf.n, cross=cross)


def _run_fields(lf: Leaf, g: dict, s: np.ndarray, run0: np.ndarray) -> dict:
    """Skeleton fields of seconds inside a trend run (run0: the run of segment 0, else segment 1's)."""
    r0 = np.where(run0, 1.0, g["cross"])
    r1 = np.where(run0, g["a"], g["b"]).astype(np.float64)
    v1 = np.where(run0, g["A"], g["Bv"])
    o = g["o"]
    sign = np.where(v1 >= o, 1, -1)
    w0, w1 = sign * o, sign * v1
    other = np.where(run0, sign * o, sign * g["A"])   # the opposite envelope: O, then the first anchor
    K = np.clip(np.rint((r1 - r0) / RECORD_SPACING), 1, np.maximum(w1 - w0, 1))
    step = np.maximum(r1 - r0, _EPS) / K
    x = (s - r0) / step
    k = np.clip(np.floor(x), 0, K - 1)
    frac = x - k
    rid = np.where(run0, 0, 1)
    if lf.key.size == 1 and rid.size and (rid == rid.flat[0]).all():
        # one leaf, one run: the map at the K+1 record points once, then gathered (same numbers)
        Ks = float(K.flat[0])
        (F,) = _warp(lf.key, np.full(int(Ks) + 1, rid.flat[0]), np.arange(int(Ks) + 1) / Ks)
        ki = k.astype(np.int64)
        F0, F1 = F[ki], F[ki + 1]
    else:
        F0, F1 = _warp(lf.key, rid, k / K, (k + 1) / K)
    lev0 = np.floor(w0 + (w1 - w0) * F0 + _EPS)
    lev1 = np.floor(w0 + (w1 - w0) * F1 + _EPS)
    climbing = frac > 1.0 - CLIMB
    top = np.where(climbing, lev0 + np.floor((lev1 - lev0) * (frac - (1.0 - CLIMB)) / CLIMB + _EPS), lev0)
    top = np.where(s < r0, w0, top)
    return dict(Mt=np.where(sign > 0, top, -other), mt=np.where(sign > 0, other, -top), sign=sign,
                level=lev0, other=other, climbing=climbing, u=np.clip(frac / (1.0 - CLIMB), 0.0, 1.0),
                dip_len=step * (1.0 - CLIMB), record=k + 10000 * rid)


def _free_fields(g: dict, s: np.ndarray, seg2: np.ndarray) -> dict:
    """Skeleton fields of seconds in a free stretch (seg2: segment 2, else segment 1 before O)."""
    a, b, A, Bv = g["a"], g["b"], g["A"], g["Bv"]
    B = np.where(seg2, Bv + (g["c"] - Bv) / (g["n"] - 1 - b) * (s - b), A + (Bv - A) / (b - a) * (s - a))
    return dict(B=B, Mt=np.where(seg2, g["hi"], np.where(g["up"], g["hi"], g["o"])),
                mt=np.where(seg2, g["lo"], np.where(g["up"], g["o"], g["lo"])),
                f0=np.where(seg2, b, a).astype(np.float64), f1=np.where(seg2, g["n"] - 1, g["cross"]))


def _stretch_of(g: dict, s: np.ndarray) -> np.ndarray:
    """Stretch index per second: 0 run of segment 0, 1 free part of segment 1, 2 its run, 3 segment 2."""
    seg = np.where(s <= g["a"], 0, np.where(s <= g["b"], 1, 2))
    return np.where(seg == 0, 0, np.where(seg == 2, 3, np.where(s > g["cross"], 2, 1)))


def _run_price(lf: Leaf, s: np.ndarray, z: np.ndarray, f: dict) -> np.ndarray:
    """Trend runs: a pull-back below the last record (tapering to zero at both ends; each one with
    its own seeded size, so they do not repeat), then the monotone climb to the next record."""
    depth = np.minimum(RECORD_VOL * lf.sigma * np.sqrt(f["dip_len"]), f["level"] - f["other"])
    size = unit01(mix(lf.key ^ U64(SALT_DIP), f["record"])) ** 1.5
    dip = np.floor(depth * size * 2.0 * np.sqrt(f["u"] * (1.0 - f["u"])) * (0.5 + 0.25 * (1.0 + z)))
    oriented = (f["level"] - dip).astype(np.int64)
    return np.where(f["climbing"], np.where(f["sign"] > 0, f["Mt"], f["mt"]),
                    np.where(f["sign"] > 0, oriented, -oriented)).astype(np.int64)


def _free_price(lf: Leaf, s: np.ndarray, z: np.ndarray, f: dict) -> np.ndarray:
    """Free stretches: base + noise tapering to zero at both ends, reflected off the envelopes."""
    Mt, mt = f["Mt"], f["mt"]
    seg_len = np.maximum(f["f1"] - f["f0"], 0.0)
    u = np.clip((s - f["f0"]) / np.maximum(seg_len, _EPS), 0.0, 1.0)
    amp = np.minimum(FREE_CAP * (Mt - mt), FREE_VOL * lf.sigma * np.sqrt(seg_len))
    free = np.rint(f["B"] + amp * 2.0 * np.sqrt(u * (1.0 - u)) * z).astype(np.int64)
    free = np.where(free > Mt, 2 * Mt - free, free)
    return np.clip(np.where(free < mt, 2 * mt - free, free), mt, Mt).astype(np.int64)


def _finish(lf: Leaf, s: np.ndarray, price, Mt, mt, Mt_prev, mt_prev) -> Path:
    """Force the new highs / lows and the anchors, pick the trade side, build the Path."""
    new_high = (Mt > Mt_prev) & (s >= 2)
    new_low = (mt < mt_prev) & (s >= 2)
    price = np.where(new_high, Mt, np.where(new_low, mt, price))
    # Anchors (the skeleton already puts them there; this makes them exact whatever the rounding).
    price = np.where(s <= 1, lf.o, price)
    price = np.where(s == lf.ih, lf.h, np.where(s == lf.il, lf.l, price))
    price = np.where(s == lf.n - 1, lf.c, price)
    at_bid = (mix(lf.key ^ U64(SALT_SIDE), s) & U64(1)).astype(bool)
    at_bid = np.where(new_high | (s == lf.ih) | (s == 0), True, at_bid)
    at_bid = np.where(new_low | (s == lf.il) | (s == 1), False, at_bid)
    return Path(price, Mt, mt, at_bid)


def _envelopes_at(lf: Leaf, g: dict, s: np.ndarray, stretch: np.ndarray):
    """(Mt, mt) int64 at scattered seconds, plus the run and free fields behind them."""
    run = (stretch == 0) | (stretch == 2)
    r = _run_fields(lf, g, s, stretch == 0)
    f = _free_fields(g, s, stretch == 3)
    Mt = np.where(run, r["Mt"], f["Mt"]).astype(np.int64)
    mt = np.where(run, r["mt"], f["mt"]).astype(np.int64)
    return Mt, mt, run, r, f


def path_at(lf: Leaf, s: np.ndarray) -> Path:
    """The path at scattered seconds: element i of ``s`` in leaf element i (shapes (E,))."""
    s = np.atleast_1d(np.asarray(s, dtype=np.int64))
    g = _geometry(lf)
    z = noise_at(lf.key, s, lf.n)
    Mt, mt, run, r, f = _envelopes_at(lf, g, s, _stretch_of(g, s))
    prev = np.maximum(s - 1, 0)
    Mt_prev, mt_prev, *_ = _envelopes_at(lf, g, prev, _stretch_of(g, prev))
    r.update(Mt=Mt, mt=mt)
    f.update(Mt=Mt, mt=mt)
    price = np.where(run, _run_price(lf, s, z, r), _free_price(lf, s, z, f))
    return _finish(lf, s, price, Mt, mt, Mt_prev, mt_prev)


def path_range(lf: Leaf, s0: int, s1: int) -> Path:
    """The path of one leaf (a Leaf of shape (1,)) at the consecutive seconds [s0, s1).

    Done stretch by stretch (the runs and free parts are contiguous), computing only what each needs
    with the per-stretch values once; the arithmetic per element is that of :func:`path_at`, so the
    numbers are identical."""
    g = _geometry(lf)
    z = noise_range(int(lf.key[0]), s0, s1, int(lf.n[0]))
    first = max(s0 - 1, 0)                      # second s0-1 only feeds the "previous envelope" of s0
    s = np.arange(first, s1, dtype=np.int64)
    cuts = np.searchsorted(s, [int(g["a"][0]), math.floor(float(g["cross"][0])), int(g["b"][0])], side="right")
    bounds = list(zip([0, *cuts], [*cuts, len(s)]))
    Mts: list[np.ndarray] = []
    mts: list[np.ndarray] = []
    fields: list[dict | None] = []
    for kind, (i0, i1) in enumerate(bounds):
        if i1 <= i0:
            fields.append(None)
            continue
        ss = s[i0:i1]
        if kind in (0, 2):
            fl = _run_fields(lf, g, ss, np.array([kind == 0]))      # (1,): per-run values once
        else:
            fl = _free_fields(g, ss, np.array([kind == 3]))
        fl["Mt"] = np.broadcast_to(fl["Mt"], ss.shape).astype(np.int64)
        fl["mt"] = np.broadcast_to(fl["mt"], ss.shape).astype(np.int64)
        Mts.append(fl["Mt"])
        mts.append(fl["mt"])
        fields.append(fl)
    Mt_all, mt_all = np.concatenate(Mts), np.concatenate(mts)
    skip = s0 - first                            # 1 when second s0-1 was added, else 0
    Mt_prev = Mt_all[:-1] if skip else np.concatenate([Mt_all[:1], Mt_all[:-1]])
    mt_prev = mt_all[:-1] if skip else np.concatenate([mt_all[:1], mt_all[:-1]])
    prices = []
    for kind, ((i0, i1), stretch) in enumerate(zip(bounds, fields)):
        lo = max(i0, skip)
        if stretch is None or i1 <= lo:
            continue
        sub = {k: (v[lo - i0:] if np.ndim(v) and np.shape(v)[0] == i1 - i0 else v) for k, v in stretch.items()}
        part = (_run_price if kind in (0, 2) else _free_price)(lf, s[lo:i1], z[lo - skip:i1 - skip], sub)
        prices.append(np.broadcast_to(part, (i1 - lo,)))
    return _finish(lf, s[skip:], np.concatenate(prices), Mt_all[skip:], mt_all[skip:], Mt_prev, mt_prev)


def base_mean(lf: Leaf, s_end: np.ndarray) -> np.ndarray:
    """Time average of the anchor polyline over seconds [0, s_end] (float ticks): O(1) per leaf.
    Used for BID_ASK and wap of bars built from real bars, where a per-second average would need
    the whole bar."""
    s_end = np.atleast_1d(np.asarray(s_end, dtype=np.float64))
    up = lf.ih < lf.il
    a = np.minimum(lf.ih, lf.il).astype(np.float64)
    b = np.maximum(lf.ih, lf.il).astype(np.float64)
    A = np.where(up, lf.h, lf.l).astype(np.float64)
    Bv = np.where(up, lf.l, lf.h).astype(np.float64)
    o, c, n = lf.o.astype(np.float64), lf.c.astype(np.float64), lf.n.astype(np.float64)
    knots_x = np.stack([np.zeros_like(a), np.ones_like(a), a, b, n - 1], axis=-1)
    knots_y = np.stack([o, o, A, Bv, c], axis=-1)
    total = np.zeros(np.broadcast(s_end, a).shape)
    for i in range(4):  # integrate each linear piece up to s_end
        x0, x1 = knots_x[..., i], knots_x[..., i + 1]
        y0, y1 = knots_y[..., i], knots_y[..., i + 1]
        xe = np.clip(s_end, x0, x1)
        ye = y0 + (y1 - y0) * (xe - x0) / np.maximum(x1 - x0, _EPS)
        total += (xe - x0) * (y0 + ye) / 2.0
    return np.where(s_end > 0, total / np.maximum(s_end, _EPS), o)


# --- volume and book sizes --------------------------------------------------------------------------
def cum_volume(V: npt.ArrayLike, n: npt.ArrayLike, k: npt.ArrayLike) -> np.ndarray:
    """Volume traded in the first k seconds of a bar of n seconds and V volume units:
    floor(V * k / n), exactly, without int64 overflow. So the seconds of a bar sum to V."""
    V, n, k = (np.asarray(x, dtype=np.int64) for x in (V, n, k))
    return (V // n) * k + ((V % n) * k) // n


def book_draws(key: npt.ArrayLike, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seeded raw draws (bid, ask), integers in [0, 2**30), for the book sizes at seconds s.
    A size is ``lot * (lo + draw % (hi - lo + 1))`` (see ``universe.BookModel.size``)."""
    h = mix(np.asarray(key, dtype=np.uint64) ^ U64(SALT_SIZE), s)
    mask = U64((1 << 30) - 1)
    return (h & mask).astype(np.int64), ((h >> U64(32)) & mask).astype(np.int64)


# --- monthly bars: calendar days as leaves ----------------------------------------------------------
def split_days(o: int, h: int, l: int, c: int, key: int, offsets: np.ndarray) -> Leaf:
    """Leaves for the calendar days of a bar longer than a day (BTC's months).

    offsets: int64 (days+1,) seconds from the bar start to each local midnight (0 first, bar length
    last). Day j opens at the previous day's close (day 0 at O), closes on a seeded walk along the
    polyline O -> H/L -> L/H -> C (the last day at C), and gets a seeded excursion above and below;
    one seeded day holds the bar's H, another (or the same) its L. So the days' OHLC aggregate to
    exactly the bar's OHLC."""
    lens = np.diff(offsets).astype(np.int64)
    nd = len(lens)
    j = np.arange(nd, dtype=np.int64)
    jh = int(mix(key, SALT_DAY_HIGH)[0] % U64(nd))
    jl = int(mix(key, SALT_DAY_LOW)[0] % U64(nd))
    xs, ys = zip(*sorted([(0.0, o), (jh + 0.45, h), (jl + 0.55, l), (float(nd), c)]))
    base = np.interp(j + 1.0, xs, ys)
    rng = float(h - l)
    close = np.clip(np.rint(base + 0.25 * rng * day_noise(key, j)), l, h).astype(np.int64)
    close[-1] = c
    open_ = np.concatenate([[o], close[:-1]]).astype(np.int64)
    up_exc = np.rint(unit01(mix(key, SALT_DAY_EXC_H * 1000 + j)) * 0.15 * rng).astype(np.int64)
    dn_exc = np.rint(unit01(mix(key, SALT_DAY_EXC_L * 1000 + j)) * 0.15 * rng).astype(np.int64)
    high = np.minimum(h, np.maximum(open_, close) + up_exc)
    low = np.maximum(l, np.minimum(open_, close) - dn_exc)
    high[jh] = h
    low[jl] = l
    return Leaf.make(lens, open_, high, low, close, mix(key, 1000 + j))


# --- the synthetic order book -----------------------------------------------------------------------
SALT_DEPTH = 51
DEPTH_REFRESH = 8    # a deeper level keeps its size this many seconds (each level at its own phase)


def depth_draws(key: int, side: int, price_ticks: np.ndarray, second: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded draws for the order book levels at ``price_ticks`` (absolute prices in ticks) on one
    side (0 ask, 1 bid) at one replay second: (u in [0, 1) deciding whether the level holds orders,
    a raw size draw in [0, 2**30), a raw venue draw in [0, 256)).

    A level's draws are keyed by its price, not its distance from the touch, so a level keeps its
    size while the quote moves; they change every DEPTH_REFRESH seconds at a phase of their own, so
    the book changes a few levels at a time."""
    level = mix(np.uint64(key) ^ U64(SALT_DEPTH), np.asarray(price_ticks, dtype=np.int64) * 2 + side)
    bucket = (np.int64(second) + (level % U64(DEPTH_REFRESH)).astype(np.int64)) // DEPTH_REFRESH
    h = mix(level, bucket)
    return unit01(h), ((h >> U64(32)) & U64((1 << 30) - 1)).astype(np.int64), \
        ((h >> U64(20)) & U64(0xFF)).astype(np.int64)
