"""The random number generators the k sweep replays (segmentation/model/engine/sparkrandom.py) against the JVM's own: Java's
Random, Spark's XORShiftRandom (and SQL's rand(), which draws from it) and RDD.takeSample."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from segmentation.model.engine import sparkrandom as R

SEEDS = [0, 1, 42, -7, 123_456_789_012, -(1 << 40), (1 << 63) - 1]


@pytest.mark.parametrize("seed", SEEDS)
def test_java_random_draws_what_the_jvm_draws(spark, seed):
    theirs, ours = spark._jvm.java.util.Random(seed), R.JavaRandom(seed)
    expected = [
        theirs.nextInt(),
        theirs.nextInt(7),
        theirs.nextInt(16),
        theirs.nextLong(),
        theirs.nextDouble(),
    ]
    expected += [theirs.nextInt(1_000_003) for _ in range(20)]
    actual = [ours.next_int(), ours.next_int(7), ours.next_int(16), ours.next_long(), ours.next_double()]
    actual += [ours.next_int(1_000_003) for _ in range(20)]
    assert actual == expected


@pytest.mark.parametrize("seed", SEEDS)
def test_xorshift_random_draws_what_spark_draws(spark, seed):
    theirs = spark._jvm.org.apache.spark.util.random.XORShiftRandom(seed)
    ours = R.XORShiftRandom(seed)
    expected = [theirs.nextInt(), theirs.nextDouble(), theirs.nextLong(), theirs.nextInt(11)]
    expected += [theirs.nextDouble() for _ in range(20)]
    actual = [ours.next_int(), ours.next_double(), ours.next_long(), ours.next_int(11)]
    actual += [ours.next_double() for _ in range(20)]
    assert actual == expected


def test_sql_rand_is_xorshift_seeded_with_seed_plus_partition(spark):
    """What the engine relies on to draw k-means|| numbers in the JVM: rand(s) in partition p is
    XORShiftRandom(s + p), one nextDouble per row in order."""
    rows = (
        spark.range(0, 12, 1, 3).select(F.spark_partition_id().alias("p"), F.rand(-99).alias("u")).collect()
    )
    streams = {p: R.XORShiftRandom(-99 + p) for p in range(3)}
    assert [r.u for r in rows] == [streams[r.p].next_double() for r in rows]


@pytest.mark.parametrize(
    "rows, slices, seed",
    [(1_203, 3, 5), (250_000, 2, 77), (30, 2, 3), (10, 4, 1), (100, 3, -12_345), (1, 1, 9)],
)
def test_take_sample_of_one_is_the_row_spark_takes(spark, rows, slices, seed):
    """Gap sampling (large partitions), a draw per row (small ones), everything (one row)."""
    ids = spark.range(0, rows, 1, slices)
    taken = list(ids._jdf.rdd().takeSample(False, 1, seed))[0]
    counts = dict(ids.groupBy(F.spark_partition_id().alias("p")).count().collect())
    sizes = [counts.get(p, 0) for p in range(slices)]
    partition, position = R.take_sample_one(sizes, seed)
    assert sum(sizes[:partition]) + position == taken
