"""Model stage, support: the random number generators Spark ML's KMeans draws from, in Python.

The k sweep's engine (segmentation/model/engine/) replays Spark ML's k-means|| start for every k in shared passes;
these are the generators it needs, bit for bit: `java.util.Random` (what `scala.util.Random` wraps: the seed of
`RDD.takeSample`, the local k-means++), Spark's `XORShiftRandom` (its seeds scrambled by Scala's MurmurHash3;
the samplers and SQL's `rand()`), and the sampling fraction of `RDD.takeSample`. tests/test_sparkrandom.py checks
them against the JVM's own. Per-row random numbers are drawn in the JVM itself (`rand()`, see `start.py`): a
Python loop per row would be too slow.
"""

from __future__ import annotations

import math
import struct

_MASK32 = (1 << 32) - 1


_MASK48 = (1 << 48) - 1


_MASK64 = (1 << 64) - 1


_DOUBLE_UNIT = 1.0 / (1 << 53)


def int32(value: int) -> int:
    """A Python int as Java's `int` (two's complement, 32 bits)."""
    value &= _MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


def int64(value: int) -> int:
    """A Python int as Java's `long` (two's complement, 64 bits)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _rotl32(x: int, r: int) -> int:
    x &= _MASK32
    return ((x << r) | (x >> (32 - r))) & _MASK32


def _mix_last(h: int, k: int) -> int:
    k = (k * 0xCC9E2D51) & _MASK32
    k = _rotl32(k, 15)
    k = (k * 0x1B873593) & _MASK32
    return (h ^ k) & _MASK32


def _mix(h: int, k: int) -> int:
    h = _rotl32(_mix_last(h, k), 13)
    return (h * 5 + 0xE6546B64) & _MASK32


def _avalanche(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    h ^= h >> 16
    return h


#: scala.util.hashing.MurmurHash3.arraySeed
ARRAY_SEED = 0x3C074A61


def murmur3_bytes_hash(data: bytes, seed: int) -> int:
    """scala.util.hashing.MurmurHash3.bytesHash (a signed 32-bit result)."""
    h = seed & _MASK32
    i = 0
    while len(data) - i >= 4:
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        h = _mix(h, k)
        i += 4
    rest = len(data) - i
    k = 0
    if rest == 3:
        k ^= data[i + 2] << 16
    if rest >= 2:
        k ^= data[i + 1] << 8
    if rest >= 1:
        k ^= data[i]
        h = _mix_last(h, k)
    return int32(_avalanche(h ^ len(data)))


class JavaRandom:
    """java.util.Random (the 48-bit linear congruential generator); subclasses change `next` only, as in Java."""

    def __init__(self, seed: int):
        self.set_seed(seed)

    def set_seed(self, seed: int) -> None:
        self._seed = (seed ^ 0x5DEECE66D) & _MASK48

    def next(self, bits: int) -> int:
        self._seed = (self._seed * 0x5DEECE66D + 0xB) & _MASK48
        return int32(self._seed >> (48 - bits))

    def next_int(self, bound: int | None = None) -> int:
        if bound is None:
            return self.next(32)
        r = self.next(31)
        m = bound - 1
        if bound & m == 0:
            return int32((bound * r) >> 31)
        u = r
        while True:
            r = u % bound
            if int32(u - r + m) >= 0:
                return r
            u = self.next(31)

    def next_long(self) -> int:
        return int64((self.next(32) << 32) + self.next(32))

    def next_double(self) -> float:
        return ((self.next(26) << 27) + self.next(27)) * _DOUBLE_UNIT


class XORShiftRandom(JavaRandom):
    """org.apache.spark.util.random.XORShiftRandom: xorshift (21, 35, 4) on a seed scrambled by MurmurHash3."""

    def set_seed(self, seed: int) -> None:
        self._seed = hash_seed(seed) & _MASK64

    def next(self, bits: int) -> int:
        s = self._seed
        s ^= (s << 21) & _MASK64
        s ^= s >> 35
        s ^= (s << 4) & _MASK64
        self._seed = s
        return int32(s & ((1 << bits) - 1))


def hash_seed(seed: int) -> int:
    """XORShiftRandom.hashSeed: MurmurHash3 of the seed's 8 big-endian bytes, twice (low and high word)."""
    data = struct.pack(">q", int64(seed))
    low = murmur3_bytes_hash(data, ARRAY_SEED)
    high = murmur3_bytes_hash(data, low)
    return int64((high << 32) | (low & _MASK32))


def take_sample_fraction(num: int, total: int) -> float:
    """SamplingUtils.computeFractionForSampleSize without replacement: a rate that gives at least `num` of
    `total` rows 99.99% of the time."""
    fraction = num / total
    gamma = -math.log(1e-4) / total
    return min(1.0, max(1e-10, fraction + gamma + math.sqrt(gamma * gamma + 2 * gamma * fraction)))


#: RandomSampler.defaultMaxGapSamplingFraction and rngEpsilon
GAP_SAMPLING_MAX_FRACTION = 0.4


RNG_EPSILON = 5e-11


def bernoulli_sample(n: int, fraction: float, seed: int) -> list[int]:
    """The positions (0..n-1) a BernoulliSampler seeded with `seed` keeps of a partition of n rows: gap
    sampling (geometric skips) for small fractions, a draw per row otherwise."""
    if fraction <= 0.0:
        return []
    if fraction >= 1.0:
        return list(range(n))
    rng = XORShiftRandom(seed)
    if fraction > GAP_SAMPLING_MAX_FRACTION:
        return [i for i in range(n) if rng.next_double() <= fraction]
    lnq = math.log1p(-fraction)
    kept, position = [], int(math.log(max(rng.next_double(), RNG_EPSILON)) / lnq)
    while position < n:
        kept.append(position)
        position += 1 + int(math.log(max(rng.next_double(), RNG_EPSILON)) / lnq)
    return kept


def take_sample_one(partition_rows: list[int], seed: int) -> tuple[int, int]:
    """(partition, position) of the row `RDD.takeSample(false, 1, seed)` returns, for partitions of these
    sizes: sample at the fraction for one row (every partition's sampler seeded from `java.util.Random` of the
    sample's seed), again with the next seed while nothing was kept, then shuffle the kept rows and take the
    first."""
    total = sum(partition_rows)
    rand = JavaRandom(seed)
    if total <= 1:
        kept = [(p, i) for p, n in enumerate(partition_rows) for i in range(n)]
    else:
        fraction = take_sample_fraction(1, total)
        kept = []
        while not kept:
            seeds = JavaRandom(rand.next_int())
            for p, n in enumerate(partition_rows):
                kept += [(p, i) for i in bernoulli_sample(n, fraction, seeds.next_long())]
    for i in range(len(kept) - 1, 0, -1):
        j = rand.next_int(i + 1)
        kept[i], kept[j] = kept[j], kept[i]
    return kept[0]
