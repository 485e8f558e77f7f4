"""Where the engine's passes run: over customers collected to the driver (`LocalRows`) or as Spark jobs (`SparkRows`).

Takes the scaled features laid out as double columns (`features_frame`) and runs a per-partition function over
them, numpy on Arrow batches, combining the partial results in partition order so every sum is reproducible.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from threadpoolctl import ThreadpoolController

from segmentation.compat import to_arrow

log = logging.getLogger(__name__)


def feature_columns(dim: int) -> list[str]:
    return [f"_x{i}" for i in range(dim)]


#: The column of `features_frame` with each row's partition (the partitions of the DataFrame Spark ML fits).
PARTITION_COLUMN = "_p"


def features_frame(scaled_df: DataFrame, dim: int, features_col: str = "scaled") -> DataFrame:
    """The vector column as `dim` double columns (Arrow hands those to numpy without copying) and the row's
    partition, same layout (a narrow projection: the partitions and row order Spark ML sees)."""
    x = vector_to_array(F.col(features_col))
    return scaled_df.select(
        *[x[i].alias(c) for i, c in enumerate(feature_columns(dim))],
        F.spark_partition_id().alias(PARTITION_COLUMN),
    )


def _add(a: Any, b: Any) -> Any:
    """Sum of two partial results of the same shape (dicts, tuples, numpy arrays, numbers)."""
    if isinstance(a, dict):
        return {
            key: _add(a[key], b[key]) if key in a and key in b else a.get(key, b.get(key)) for key in a | b
        }
    if isinstance(a, tuple):
        return tuple(_add(x, y) for x, y in zip(a, b))
    return a + b


#: per_batch(x, squared norms) -> a partial result (x: the block's rows, n x dim).
PerBatch = Callable[[np.ndarray, np.ndarray], Any]


#: per_partition(partition index, blocks) -> a partition's result; blocks yield (x, squared norms, extra
#: columns as an n x e array) in row order.
PerPartition = Callable[[int, Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]], Any]


def _fold(per_batch: PerBatch, combine: Callable[[Any, Any], Any]) -> PerPartition:
    def run(_: int, blocks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Any:
        total = None
        for x, xx, _extra in blocks:
            part = per_batch(x, xx)
            total = part if total is None else combine(total, part)
        return total

    return run


def _combined(results: list[Any], combine: Callable[[Any, Any], Any]) -> Any:
    total = None
    for part in results:
        if part is not None:
            total = part if total is None else combine(total, part)
    return total


_POOL: ThreadPoolExecutor | None = None


_BLAS: ThreadpoolController | None = None


def parallel_map(fn: Callable[[Any], Any], items: list) -> list:
    """fn on every item, on every core at once (numpy leaves the interpreter lock for its loops), in order.
    BLAS runs single-threaded meanwhile: its own threads would fight these for the same cores."""
    global _POOL, _BLAS
    if len(items) <= 1:
        return [fn(item) for item in items]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="kmeans-pass")
        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas"):
        return list(_POOL.map(fn, items))


class Rows:
    """The customers' features, partition by partition in the layout Spark ML fits (`partition_rows`: rows per
    partition, empty ones included). `map_partitions(per_partition)`: the result of every partition, in
    partition order; `reduce(per_batch, combine)`: `per_batch` on blocks of rows, combined in row order
    (`_add`: dicts / tuples of numpy arrays and numbers are summed)."""

    partition_rows: list[int]

    def map_partitions(self, per_partition: PerPartition) -> list[Any]:
        raise NotImplementedError

    def reduce(self, per_batch: PerBatch, combine: Callable[[Any, Any], Any] = _add) -> Any:
        return _combined(self.map_partitions(_fold(per_batch, combine)), combine)

    def rows_at(self, positions: dict[int, list[int]]) -> dict[tuple[int, int], np.ndarray]:
        """The features of the rows at these (partition -> positions in it)."""
        wanted = {p: set(ps) for p, ps in positions.items()}

        def pick(p: int, blocks: Iterator) -> dict:
            out, offset = {}, 0
            for x, _, _ in blocks:
                for i in wanted.get(p, ()):
                    if offset <= i < offset + len(x):
                        out[(p, i)] = x[i - offset].copy()
                offset += len(x)
            return out

        return {key: row for part in self.map_partitions(pick) for key, row in part.items()}


def partition_job(
    df: DataFrame, dim: int, per_partition: PerPartition, extra: list[str] | None = None
) -> list:
    """`per_partition` on every non-empty partition of `df` (the feature columns, `PARTITION_COLUMN` and the
    `extra` columns), as one Spark job: each Arrow batch is handed to numpy, only the pickled results leave
    the executors; they come back in partition order (`collect` keeps it)."""
    extra = list(extra or [])

    def partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        state = {"p": None}

        def blocks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                state["p"] = int(batch.column(PARTITION_COLUMN)[0].as_py())
                x = _matrix(batch, dim)
                more = (
                    np.column_stack(
                        [
                            np.asarray(batch.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)
                            for c in extra
                        ]
                    )
                    if extra
                    else np.empty((len(x), 0))
                )
                yield x, np.einsum("ij,ij->i", x, x), more

        stream = blocks()
        first = next(stream, None)
        if first is None:
            return

        def chained() -> Iterator:
            yield first
            yield from stream

        result = per_partition(state["p"], chained())
        yield pa.RecordBatch.from_arrays([pa.array([pickle.dumps(result)], pa.binary())], ["payload"])

    columns = [*feature_columns(dim), PARTITION_COLUMN, *extra]
    return [
        pickle.loads(r["payload"])
        for r in df.select(*columns).mapInArrow(partition, "payload binary").collect()
    ]


class SparkRows(Rows):
    """Features in a cached DataFrame of double columns: every pass is one Spark job (`partition_job`); no row
    leaves its executor."""

    def __init__(self, features_df: DataFrame, dim: int):
        self.features_df, self.dim = features_df, dim
        counts = dict(features_df.groupBy(PARTITION_COLUMN).count().collect())
        self.partition_rows = [int(counts.get(p, 0)) for p in range(features_df.rdd.getNumPartitions())]

    def map_partitions(self, per_partition: PerPartition) -> list[Any]:
        return partition_job(self.features_df, self.dim, per_partition)


class LocalRows(Rows):
    """Features collected once to the driver (Arrow), for customer counts up to `model.driver_sweep_max_rows`:
    a pass is then milliseconds of numpy instead of a Spark job (about 0.3 s of scheduling and Python worker
    round trip each on two local cores, whatever the size)."""

    def __init__(self, features_df: DataFrame, dim: int, block: int = 65_536):
        table = to_arrow(features_df)
        self.x = _matrix(table, dim) if table.num_rows else np.empty((0, dim))
        self.xx = np.einsum("ij,ij->i", self.x, self.x)
        partitions = np.asarray(table.column(PARTITION_COLUMN).to_numpy(), dtype=np.int64)
        self.partition_rows = np.bincount(partitions, minlength=features_df.rdd.getNumPartitions()).tolist()
        if np.any(np.diff(partitions) < 0):
            raise RuntimeError("collected features are not in partition order")
        self.block = block

    def blocks(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(features, squared norms) of every row, `block` rows at a time, in order."""
        return [
            (self.x[i : i + self.block], self.xx[i : i + self.block])
            for i in range(0, len(self.x), self.block)
        ]

    def reduce(self, per_batch: PerBatch, combine: Callable[[Any, Any], Any] = _add) -> Any:
        """`per_batch` on the blocks on every core at once (numpy leaves the interpreter lock for its loops),
        combined in block order."""
        return _combined(parallel_map(lambda block: per_batch(*block), self.blocks()), combine)

    def map_partitions(self, per_partition: PerPartition) -> list[Any]:
        results, start = [], 0
        for p, n in enumerate(self.partition_rows):
            if n:
                end = start + n
                blocks = (
                    (
                        self.x[i : min(i + self.block, end)],
                        self.xx[i : min(i + self.block, end)],
                        np.empty((0, 0)),
                    )
                    for i in range(start, end, self.block)
                )
                results.append(per_partition(p, blocks))
                start = end
        return results


def _matrix(batch: pa.RecordBatch | pa.Table, dim: int) -> np.ndarray:
    columns = [np.asarray(batch.column(i).to_numpy(), dtype=np.float64) for i in range(dim)]
    return np.column_stack(columns)
