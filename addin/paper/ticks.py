"""The deterministic tick generator: the price path, second by second, inside one real bar.

Everything here is pure numpy and works in integer *ticks* (price / minTick), so every value is on
the contract's tick grid by construction. One call evaluates many instruments at one second each
(quotes) or one bar at many consecutive seconds (bars, tick paths); both give identical numbers.

A *leaf* is one bar whose seconds are generated directly: a daily bar (GOOG and everything derived
from it), an hourly bar (EUR.USD), or one calendar day inside a monthly bar (BTC; see
:func:`split_days`). A leaf of ``n`` seconds with real ``O, H, L, C`` is drawn like this:

* Anchors: second 0 and 1 trade at O, a seeded second ``ih`` at H, another ``il`` at L (both in
  ``[2, n-2]``), the last second ``n-1`` at C.
* Base: the polyline through the anchors, ``B(s)``. Its running maximum ``M(s)`` and minimum ``m(s)``
  are known in closed form; rounded to the grid (floor / ceil) they are the *envelopes* ``Mt, mt``.
* The path never leaves ``[mt(s), Mt(s)]`` and touches ``Mt`` every time ``Mt`` steps up (a new
  high) and ``mt`` every time it steps down. So the bar's high and low *so far* are exactly
  ``Mt(s)`` and ``mt(s)``: O(1) for any second, no scan over earlier seconds.
* Where the base is making new highs (lows) the path hangs below (above) the envelope in small
  scallops of seeded depth; elsewhere it is the base plus bounded multi-scale noise that tapers to
  zero at the anchors, clamped to the envelopes. All noise is hash-based (splitmix64) on the
  (seed, instrument, bar, second) so any second is computable on its own.

Trade side: second 0 and every new high trade at the bid, second 1 and every new low at the ask,
other seconds at a seeded side. With a spread of ``sp`` ticks (bid = ask - sp) that makes the
BID/ASK/MIDPOINT extremes of any bar prefix exact too (see ``market.py``):
max bid = Mt, min ask = mt, max ask = Mt + sp, min bid = mt - sp (from second 1 on).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

U64 = np.uint64
_GOLDEN = U64(0x9E3779B97F4A7C15)
_MUL1 = U64(0xBF58476D1CE4E5B9)
_MUL2 = U64(0x94D049BB133111EB)
_SPREAD_X = U64(0xD6E8FEB86659FD93)

# Salts: independent hash streams for the different random choices.
SALT_HIGH, SALT_LOW, SALT_SIDE, SALT_SIZE, SALT_NOISE = 11, 12, 13, 14, 100
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
        ih = 2 + (mix(key, SALT_HIGH) % (n - 3).astype(np.uint64)).astype(np.int64)      # [2, n-2]
        il = 2 + (mix(key, SALT_LOW) % (n - 4).astype(np.uint64)).astype(np.int64)       # [2, n-3]
        il = il + (il >= ih)                                                               # skip ih
        as64 = lambda a: np.atleast_1d(np.asarray(a, dtype=np.int64))  # noqa: E731
        return cls(n, as64(o), as64(h), as64(l), as64(c), key, ih, il)

    FIELDS = ("n", "o", "h", "l", "c", "key", "ih", "il")

    def take(self, idx) -> "Leaf":
        return Leaf(*(getattr(self, f)[idx] for f in self.FIELDS))

    @property
    def sigma(self) -> np.ndarray:
        """Noise scale in ticks per sqrt(second): the bar's range over sqrt(its length)."""
        return (self.h - self.l) / np.sqrt(self.n)


@dataclass
class Path:
    """The generated state at given seconds (arrays of one shape, prices in ticks).

    price: the trade price (for CASH: the midpoint); hi, lo: high and low of the leaf so far
    (inclusive of this second); at_bid: the trade of this second was at the bid (else the ask)."""

    price: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    at_bid: np.ndarray


@dataclass
class _Skeleton:
    """What the anchors imply at seconds s (arrays of one shape).

    Mt, mt: the leaf's high and low so far (int64 ticks). run: s is in a trend run, rising (sign +1)
    or falling (-1); for runs, in oriented ticks (multiplied by sign): level = the last record,
    other = the opposite envelope, climbing = s is in a record's final climb, u / dip_len = position
    in and length of the pull-back before it, record = which record (seeds the pull-back's size). For free stretches: B, the linear base (float ticks),
    and [f0, f1] the stretch."""

    Mt: np.ndarray
    mt: np.ndarray
    run: np.ndarray
    sign: np.ndarray
    level: np.ndarray
    other: np.ndarray
    climbing: np.ndarray
    u: np.ndarray
    dip_len: np.ndarray
    record: np.ndarray
    B: np.ndarray
    f0: np.ndarray
    f1: np.ndarray

    def tail(self) -> "_Skeleton":
        """Drop the first element (the second before the first one asked for)."""
        return _Skeleton(*(getattr(self, f)[1:] for f in self.__dataclass_fields__))


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
    if lf.key.size == 1 and np.size(K) == 1 and np.size(rid) and (rid == rid.flat[0]).all():
        # one leaf, one run: the map at the K+1 record points once, then gathered (same numbers)
        Ks = float(np.asarray(K).flat[0])
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


_RUN_KEYS = ("sign", "level", "other", "climbing", "u", "dip_len", "record")
_FREE_KEYS = ("B", "f0", "f1")


def _skeleton(lf: Leaf, s: np.ndarray) -> _Skeleton:
    """The anchors' skeleton at seconds s (see the module doc).

    Segment 0, from (1, O) to the first of H/L, is a trend run. Segment 1 runs to the second anchor:
    free while it is on the first anchor's side of O (linear base), then a trend run from where it
    crosses O. Segment 2, to (n-1, C), is free. A trend run of length T reaches K = T / 300 s records
    (at most one per tick), at equal spacing, at levels along a warped path (uneven steps); between
    two records it pulls back and then climbs monotonically (the last 30% of the spacing) to the next.

    One leaf at sorted seconds (the range case) is done stretch by stretch, computing only what each
    stretch needs; the arithmetic per element is the same, so the numbers are identical."""
    g = _geometry(lf)
    if lf.key.size == 1 and len(s) > 64:
        return _skeleton_sorted(lf, g, s)
    seg = np.where(s <= g["a"], 0, np.where(s <= g["b"], 1, 2))
    run0 = seg == 0
    run = run0 | ((seg == 1) & (s > g["cross"]))
    r = _run_fields(lf, g, s, run0)
    f = _free_fields(g, s, seg == 2)
    return _Skeleton(np.where(run, r["Mt"], f["Mt"]).astype(np.int64),
                     np.where(run, r["mt"], f["mt"]).astype(np.int64), run,
                     *(r[k] for k in _RUN_KEYS), *(f[k] for k in _FREE_KEYS))


def _skeleton_sorted(lf: Leaf, g: dict, s: np.ndarray) -> _Skeleton:
    a, b, cross = int(g["a"][0]), int(g["b"][0]), float(g["cross"][0])
    # stretches: [.., a] run 0; (a, cross] free; (cross, b] run 1; (b, ..] free
    cuts = np.searchsorted(s, [a, math.floor(cross), b], side="right")
    parts = []
    for lo_i, hi_i, kind in ((0, cuts[0], "run0"), (cuts[0], cuts[1], "free1"), (cuts[1], cuts[2], "run1"),
                             (cuts[2], len(s), "free2")):
        if hi_i <= lo_i:
            continue
        ss = s[lo_i:hi_i]
        if kind.startswith("run"):
            r = _run_fields(lf, g, ss, np.full(len(ss), kind == "run0"))
            zero = np.zeros(len(ss))
            parts.append((r["Mt"], r["mt"], np.ones(len(ss), bool), *(r[k] for k in _RUN_KEYS), zero, zero, zero))
        else:
            f = _free_fields(g, ss, np.full(len(ss), kind == "free2"))
            zero = np.zeros(len(ss))
            parts.append((f["Mt"], f["mt"], np.zeros(len(ss), bool), zero.astype(np.int64), zero, zero,
                          np.zeros(len(ss), bool), zero, zero, zero.astype(np.int64), *(f[k] for k in _FREE_KEYS)))
    cols = [np.concatenate([np.broadcast_to(p[i], (len(p[0]),)) for p in parts]) for i in range(13)]
    cols[0], cols[1] = cols[0].astype(np.int64), cols[1].astype(np.int64)
    return _Skeleton(*cols)


def _core(lf: Leaf, s: np.ndarray, z: np.ndarray, sk: _Skeleton, Mt_prev: np.ndarray, mt_prev: np.ndarray) -> Path:
    """The path at seconds s given the noise z, the skeleton at s and the envelopes at s - 1."""
    Mt, mt = sk.Mt, sk.mt
    sigma = lf.sigma
    w = 0.5 * (1.0 + z)

    # Free stretches: base + noise tapering to zero at both ends, reflected off the envelopes.
    seg_len = np.maximum(sk.f1 - sk.f0, 0.0)
    u = np.clip((s - sk.f0) / np.maximum(seg_len, _EPS), 0.0, 1.0)
    amp = np.minimum(FREE_CAP * (Mt - mt), FREE_VOL * sigma * np.sqrt(seg_len))
    free = np.rint(sk.B + amp * 2.0 * np.sqrt(u * (1.0 - u)) * z).astype(np.int64)
    free = np.where(free > Mt, 2 * Mt - free, free)
    free = np.clip(np.where(free < mt, 2 * mt - free, free), mt, Mt)

    # Trend runs: a pull-back below the last record (tapering to zero at both ends), then the climb.
    # Each pull-back gets its own seeded size (from none to full), so they do not repeat.
    depth = np.minimum(RECORD_VOL * sigma * np.sqrt(sk.dip_len), sk.level - sk.other)
    size = unit01(mix(lf.key ^ U64(SALT_DIP), sk.record)) ** 1.5
    dip = np.floor(depth * size * 2.0 * np.sqrt(sk.u * (1.0 - sk.u)) * (0.5 + 0.5 * w)).astype(np.int64)
    oriented = np.where(sk.climbing, sk.level + 0, sk.level - dip)
    run_price = np.where(sk.sign > 0, np.where(sk.climbing, Mt, oriented), np.where(sk.climbing, mt, -oriented))
    price = np.where(sk.run, run_price, free)

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


def path_at(lf: Leaf, s: np.ndarray) -> Path:
    """The path at scattered seconds: element i of ``s`` in leaf element i (shapes (E,))."""
    s = np.atleast_1d(np.asarray(s, dtype=np.int64))
    z = noise_at(lf.key, s, lf.n)
    prev = _skeleton(lf, np.maximum(s - 1, 0))
    return _core(lf, s, z, _skeleton(lf, s), prev.Mt, prev.mt)


def path_range(lf: Leaf, s0: int, s1: int) -> Path:
    """The path of one leaf (a Leaf of shape (1,)) at the consecutive seconds [s0, s1)."""
    s = np.arange(s0, s1, dtype=np.int64)
    z = noise_range(int(lf.key[0]), s0, s1, int(lf.n[0]))
    # The skeleton once over [s0-1, s1): second s0-1 only feeds the "previous envelope" of s0.
    wide = _skeleton(lf, np.arange(max(s0 - 1, 0), s1, dtype=np.int64))
    if s0 == 0:  # second 0 has no predecessor: compare it with itself (no step)
        return _core(lf, s, z, wide, np.concatenate([wide.Mt[:1], wide.Mt[:-1]]),
                     np.concatenate([wide.mt[:1], wide.mt[:-1]]))
    return _core(lf, s, z, wide.tail(), wide.Mt[:-1], wide.mt[:-1])


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
def cum_volume(V: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Volume traded in the first k seconds of a bar of n seconds and V volume units:
    floor(V * k / n), exactly, without int64 overflow. So the seconds of a bar sum to V."""
    V, n, k = (np.asarray(x, dtype=np.int64) for x in (V, n, k))
    return (V // n) * k + ((V % n) * k) // n


def book_draws(key: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
