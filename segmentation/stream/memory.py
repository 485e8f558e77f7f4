"""The stream's order rows kept in memory between versions, so a micro-batch does not read every version's
Parquet files again.

Takes the store (`publish.stream_store`) and the order rows each committed version adds; hands
`stream.version` the order rows as of a version: the rows of the version the stream started from, read once and
cached by Spark, and each later version's rows, read back from the files it wrote and cached. Every `fold_every`
versions the parts are folded into one cached frame, so the plans stay small. The store stays the truth: a new
run, or a version the memory does not hold, reads the store again.
"""

from __future__ import annotations

import logging
from functools import reduce

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from segmentation.publish.stream_store import StreamStore

log = logging.getLogger(__name__)

#: How many versions' order rows are kept as parts before they are folded into one cached frame.
FOLD_EVERY = 16


class OrdersInMemory:
    """The committed order rows as of `version`: cached parts (`table`), one more per committed version (`add`)."""

    def __init__(self, store: StreamStore, fold_every: int = FOLD_EVERY):
        self.store = store
        self.fold_every = fold_every
        self.version: int | None = None
        self.parts: list[DataFrame] = []

    def table(self, version: int) -> DataFrame:
        """The order rows of every committed version up to `version`."""
        if self.version != version:
            self.release()
            base = self.store.state_table("orders", version).persist(StorageLevel.MEMORY_AND_DISK)
            self.parts, self.version = [base], version
        return _union(self.parts)

    def add(self, version: int, rows: DataFrame) -> None:
        """`rows` (cached by the caller, handed over) are what committed `version` adds to `version - 1`."""
        if self.version != version - 1:
            rows.unpersist()
            self.release()
            return
        self.parts.append(rows)
        self.version = version
        if len(self.parts) > self.fold_every:
            folded = _union(self.parts).persist(StorageLevel.MEMORY_AND_DISK)
            rows_kept = folded.count()  # cached before the parts it is made of are released
            for part in self.parts:
                part.unpersist()
            self.parts = [folded]
            log.info("stream: order rows of versions up to %d folded in memory (%d rows)", version, rows_kept)

    def release(self) -> None:
        for part in self.parts:
            part.unpersist()
        self.parts, self.version = [], None


def _union(parts: list[DataFrame]) -> DataFrame:
    return reduce(DataFrame.unionByName, parts)
