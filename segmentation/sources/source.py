"""What every source stage hands on: one customer-feature table plus its reconciliation.

A source (`sources.transactions.transaction_source`, `sources.customers.customer_source`) reads its input,
gives every row an accepted or rejected verdict and builds the per-customer table. The pipeline takes a
`Source` and never asks which kind of input it came from, except where the published layout differs
(`kind`): everything after it (prepare, model, segments, report, publish) is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


@dataclass
class Reconciliation:
    """Where every input row went: `input_rows = accepted_rows + sum(rejected_rows)`, and of the customers
    the accepted rows make, how many are clustered and why the others are not (reason -> count)."""

    input_rows: int
    accepted_rows: int
    rejected_rows: dict[str, int]
    customers: int
    clustered_customers: int
    excluded_customers: dict[str, int]

    def check(self, one_row_per_customer: bool) -> None:
        """Raise when the counts do not add up (a bug, never a user's mistake)."""
        if self.input_rows != self.accepted_rows + sum(self.rejected_rows.values()):
            raise RuntimeError("reconciliation failed: input rows != accepted + rejected")
        if one_row_per_customer and self.accepted_rows != self.customers:
            raise RuntimeError("reconciliation failed: accepted rows != customers")


@dataclass
class Source:
    """The customers of one snapshot and the counts that reconcile them to the input rows.

    `customers_df`: every customer (features under the model's column names, `excluded_reason` null for the
    clustered ones); `clustered_df`: the customers to cluster, in a fixed layout (same input + seed = same
    segments). `rejects_df`: every rejected input row with its reason; `counts`: where every input row went. `columns`: the published name of each
    column of `customers_df` that is renamed on output (a customer table's internal `_f0`.. names).
    `order_column`: the column whose segment mean orders the segment ids (highest first).
    `manifest`: the source's own manifest entries (input path, format, timestamp format, ...).
    `items_df`: a transaction log's accepted lines per order and product (`validate.ledger_items`) when the
    input maps a product, else None.
    """

    kind: str
    input_cfg: dict[str, Any]
    snapshot_date: str
    customers_df: DataFrame
    clustered_df: DataFrame
    rejects_df: DataFrame
    counts: Reconciliation
    order_column: str
    manifest: dict[str, Any]
    columns: dict[str, str] = field(default_factory=dict)
    rfm_breakpoints: dict[str, Any] | None = None
    demographic_columns: list[str] = field(default_factory=list)
    items_df: DataFrame | None = None


def ordered_counts(counts: dict[str, int], order: tuple[str, ...]) -> dict[str, int]:
    """`counts` in the documented order of `order`, without the reasons that did not occur; a reason `order`
    does not list comes after them (sorted), never dropped: the counts must still add up to the rows."""
    known = {reason: counts[reason] for reason in order if counts.get(reason)}
    return known | {reason: counts[reason] for reason in sorted(set(counts) - set(order)) if counts[reason]}


def count_by(df: DataFrame, column: str, order: tuple[str, ...]) -> dict[str, int]:
    """Rows per non-null value of `column`, in the documented order of `order`."""
    found = {
        r[column]: int(r["count"]) for r in df.groupBy(column).count().collect() if r[column] is not None
    }
    return ordered_counts(found, order)


def clustering_layout(customers_df: DataFrame, partitions: int) -> DataFrame:
    """The customers to cluster in a fixed, data-determined layout (persisted: the caller unpersists it), so the
    same input and seed give the same segments, local or on a cluster."""
    return (
        customers_df.filter(F.col("excluded_reason").isNull())
        .repartition(partitions, "customer_id")
        .sortWithinPartitions("customer_id")
        .persist()
    )
