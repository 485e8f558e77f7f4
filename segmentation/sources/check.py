"""The dry run (`segment-customers --check`): what the job would read and reject, from a seeded sample.

Takes a validated config, reads the input as the job would (same reader, same mapping, same timestamp
detection, same validation) on a seeded sample of its rows, and hands the entry point the lines to print and
whether the run would start. Writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.errors import InputError
from segmentation.sources.customers import (
    CUSTOMER_REJECT_REASONS,
    classify_customer_rows,
    internal_names,
    read_customer_table,
)
from segmentation.sources.read import input_name, original_columns, read_transactions, seeded_sample
from segmentation.sources.source import count_by
from segmentation.sources.timestamps import resolve_timestamp_format
from segmentation.sources.validate import REJECT_REASONS, classify_rows

#: Rows of the seeded sample `--check` reads by default.
CHECK_ROWS = 10_000


@dataclass
class CheckResult:
    """What the dry run found: the lines to print, and the reason the run would not start (None: it would)."""

    lines: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    names = list(rows[0])
    cells = [[("" if r[n] is None else str(r[n])) for n in names] for r in rows]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    out = ["  " + "  ".join(n.ljust(w) for n, w in zip(names, widths))]
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return out


def _plain(number) -> str | None:
    """A decimal as written by a person: 4, 2.55 (no trailing zeros, no exponent)."""
    return None if number is None else f"{number.normalize():f}"


def _input_lines(inp: dict[str, Any], total: int, sampled: int) -> list[str]:
    lines = [
        f"Input: {input_name(inp)} ({inp['format']}, kind {inp['kind']}): {total:,} rows, {sampled:,} sampled"
    ]
    if inp["format"] == "csv":
        csv = inp["csv"]
        lines.append(
            f"  csv: delimiter {csv['delimiter']!r}, encoding {csv['encoding']}, decimal {csv['decimal']!r}, "
            f"multiline {str(csv['multiline']).lower()}"
        )
    return lines


def _reject_lines(counts: dict[str, int], sampled: int) -> list[str]:
    lines = [f"Would reject on the sample: {sum(counts.values()):,} of {sampled:,} rows"]
    lines += [f"  {reason:<22} {n:>8,}" for reason, n in counts.items()]  # in the documented order (count_by)
    return lines


def _sample(raw_df: DataFrame, inp: dict[str, Any], rows: int, seed: int) -> tuple[DataFrame, int, int]:
    """(the cached seeded sample, the input's rows, the sample's rows); an empty input is an error."""
    total = raw_df.count()
    if total == 0:
        raise InputError(f"input has no rows: {input_name(inp)}")
    sample_df = seeded_sample(raw_df, rows, seed, total=total).cache()
    return sample_df, total, sample_df.count()


def check_input(spark: SparkSession, cfg: dict[str, Any], rows: int = CHECK_ROWS) -> CheckResult:
    """Read a seeded sample of the configured input and describe what the job would do with it."""
    inp = cfg["input"]
    seed = int(cfg["model"]["seed"])
    if inp["kind"] == "customers":
        return _check_customers(spark, cfg, rows, seed)
    raw_df, inp = read_transactions(spark, inp)
    originals = original_columns(raw_df)
    sample_df, total, sampled = _sample(raw_df, inp, rows, seed)
    try:
        resolved, detected = resolve_timestamp_format(raw_df, inp, seed, sample_df=sample_df)
        result = CheckResult(_input_lines(inp, total, sampled))
        mapped = {role: name for role, name in inp["columns"].items() if name}
        result.lines.append("Columns: " + ", ".join(f"{role} <- {name!r}" for role, name in mapped.items()))
        unmapped = [c for c in originals if c not in mapped.values()]
        if unmapped:
            result.lines.append("  not used: " + ", ".join(repr(c) for c in unmapped))
        how = "detected" if detected else "configured"
        result.lines.append(f"Timestamps: {resolved['timestamp_format']!r} ({how})")
        classified_df = classify_rows(sample_df, resolved, cfg["cleaning"]["drop_duplicates"], originals)
        classified_df = classified_df.cache()
        counts = count_by(classified_df, "reject_reason", REJECT_REASONS)
        accepted_df = classified_df.filter(F.col("reject_reason").isNull())
        accepted = sampled - sum(counts.values())
        examples = accepted_df.orderBy("_customer_id", "_ts").limit(5).collect()
        result.lines.append("Parsed sample rows (first 5 accepted, by customer):")
        result.lines += _table(
            [
                {
                    "customer_id": r["_customer_id"],
                    "order_id": r["_order_id"],
                    "timestamp": r["_ts"],
                    "quantity": _plain(r["_quantity"]),
                    "unit_price": _plain(r["_unit_price"]),
                    "value": f"{r['_value']:.2f}",
                }
                for r in examples
            ]
        )
        result.lines += _reject_lines(counts, sampled)
        customers = accepted_df.select("_customer_id").distinct().count()
        result.lines.append(f"Customers in the sample: {customers:,} ({accepted:,} accepted rows)")
        if accepted == 0:
            result.problem = f"no sampled row would be accepted (rejects: {counts})"
        elif counts.get("invalid_timestamp", 0) * 2 > sampled:
            result.problem = (
                f"{counts['invalid_timestamp']:,} of {sampled:,} sampled timestamps do not parse as "
                f"{resolved['timestamp_format']!r}"
            )
        classified_df.unpersist()
        return result
    finally:
        sample_df.unpersist()


def _check_customers(spark: SparkSession, cfg: dict[str, Any], rows: int, seed: int) -> CheckResult:
    inp = cfg["input"]
    sample_df, total, sampled = _sample(read_customer_table(spark, inp), inp, rows, seed)
    try:
        result = CheckResult(_input_lines(inp, total, sampled))
        result.lines.append(
            f"Columns: customer_id <- {inp['columns']['customer_id']!r}; features {inp['features']}; "
            f"categorical {inp['categorical']}; model features {cfg['prepare']['features']}"
        )
        classified_df = classify_customer_rows(sample_df, inp).cache()
        counts = count_by(classified_df, "reject_reason", CUSTOMER_REJECT_REASONS)
        accepted_df = classified_df.filter(F.col("reject_reason").isNull())
        shown = ["customer_id", *inp["features"], *inp["categorical"]]
        examples = accepted_df.orderBy("customer_id").limit(5).collect()
        names = internal_names(inp)
        result.lines.append("Parsed sample rows (first 5 accepted, by customer):")
        result.lines += _table(
            [{c: r["customer_id"] if c == "customer_id" else r[names[c]] for c in shown} for r in examples]
        )
        result.lines += _reject_lines(counts, sampled)
        accepted = sampled - sum(counts.values())
        result.lines.append(f"Customers in the sample: {accepted:,}")
        if accepted == 0:
            result.problem = f"no sampled customer row would be accepted (rejects: {counts})"
        classified_df.unpersist()
        return result
    finally:
        sample_df.unpersist()
