"""Timestamp formats of the input: the documented candidates, their parsers, and detection on a sample.

`input.timestamp_format: auto` (the default) hands the validate stage the candidate that parses the most of a
seeded sample of the timestamp column (`detect_timestamp_format`); an explicit format is used as given.
A format is a Spark datetime pattern or one of the named forms below.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.compat import try_cast
from segmentation.errors import InputError
from segmentation.io import col, strip
from segmentation.sources.read import seeded_sample

log = logging.getLogger(__name__)


#: ISO 8601 and its common relatives: `2011-12-09`, `2011-12-09 12:50[:00[.123]]`, with `T`, `Z` or an offset.
ISO8601 = "iso8601"


ISO_LIKE = (
    r"^\s*\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}([.,]\d{1,9})?)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)?\s*$"
)


#: Numbers (or strings of digits) since 1970-01-01 00:00 UTC, by unit.
EPOCH_UNITS = {"epoch_seconds": 1, "epoch_millis": 10**3, "epoch_micros": 10**6, "epoch_nanos": 10**9}


#: A number read as an epoch must land in this window to count as parsed (so that 20111209, a yyyyMMdd date,
#: is not also read as a second count in August 1970).
EPOCH_WINDOW = ("1980-01-01", "2100-01-01")


#: What `auto` tries, in this order (the order breaks ties between candidates that agree on every value).
CANDIDATES = (
    ISO8601,
    "yyyy/M/d[ H:mm[:ss]]",
    "M/d/yyyy[ H:mm[:ss]]",
    "d/M/yyyy[ H:mm[:ss]]",
    "M/d/yyyy h:mm[:ss] a",
    "d.M.yyyy[ H:mm[:ss]]",
    "d-M-yyyy[ H:mm[:ss]]",
    "yyyyMMdd[HHmmss]",
    *EPOCH_UNITS,
)


#: A timestamp or date column needs no pattern.
NATIVE = "native"


def _number(c: Column, data_type: T.DataType) -> Column:
    """A number, or a string of digits (optionally with a fraction), as a decimal; anything else null."""
    if isinstance(data_type, T.NumericType):
        return try_cast(c, T.DecimalType(38, 9))
    value = strip(c)
    return F.when(value.rlike(r"^[+-]?\d+(\.\d+)?$"), try_cast(value, T.DecimalType(38, 9)))


def parse_timestamp(c: Column, data_type: T.DataType, timestamp_format: str) -> Column:
    """The column as a timestamp in `timestamp_format` (null where a value does not parse)."""
    if isinstance(data_type, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return c.cast("timestamp")
    if timestamp_format in EPOCH_UNITS:
        # micros = number * (10^6 / unit); try_ arithmetic: an out-of-range number is null, not an error
        number = _number(c, data_type)
        unit = EPOCH_UNITS[timestamp_format]
        micros = (
            F.try_multiply(number, F.lit(10**6 // unit))
            if unit <= 10**6
            else F.try_divide(number, F.lit(unit // 10**6))
        )
        ts = F.timestamp_micros(try_cast(micros, "long"))
        low, high = (F.lit(d).cast("timestamp") for d in EPOCH_WINDOW)
        return F.when((ts >= low) & (ts < high), ts)
    value = strip(c)
    if timestamp_format == ISO8601:
        # a plain cast knows every ISO form; the shape check keeps out what it accepts beyond them ("2011")
        return F.when(value.rlike(ISO_LIKE), try_cast(F.regexp_replace(value, ",", "."), "timestamp"))
    if timestamp_format == "yyyy-MM-dd HH:mm:ss":
        # values of exactly that shape are cast (the same timestamp, several times faster than the formatter)
        exact = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
        strict = F.try_to_timestamp(value, F.lit(timestamp_format))
        raw = c.cast("string")
        return F.when(raw.rlike(exact), try_cast(raw, "timestamp")).otherwise(strict)
    return F.try_to_timestamp(value, F.lit(timestamp_format))


@dataclass
class Detection:
    """What `detect_timestamp_format` found: the format, how much of the sample it parsed, and the counts."""

    timestamp_format: str
    sample_values: int
    parsed: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.parsed / self.sample_values if self.sample_values else 0.0


def _non_empty(c: Column) -> Column:
    return c.isNotNull() & (strip(c) != "")


def detect_timestamp_format(sample_df: DataFrame, column: str, full_df: DataFrame | None = None) -> Detection:
    """The candidate that parses the most non-empty values of `column` in `sample_df`.

    Two candidates that parse equally many but give different timestamps for some value (`1/2/2011`: January
    or February?) are decided on `full_df` (every row) when given; still tied, it is an error that says which
    format to set. Fewer than half of the sample parsed is an error quoting three values."""
    data_type = sample_df.schema[column].dataType
    if isinstance(data_type, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return Detection(NATIVE, 0, 0)
    numeric = isinstance(data_type, T.NumericType)
    candidates = [c for c in CANDIDATES if c in EPOCH_UNITS or not numeric or c.startswith("yyyyMMdd")]
    values_df = sample_df.select(col(column).alias("v")).filter(_non_empty(F.col("v")))
    parsed_df = values_df.select(
        "v", *[parse_timestamp(F.col("v"), data_type, c).alias(f"c{i}") for i, c in enumerate(candidates)]
    ).cache()
    try:
        counts_row = parsed_df.agg(
            F.count(F.lit(1)).alias("total"),
            *[F.count(f"c{i}").alias(f"c{i}") for i in range(len(candidates))],
        ).first()
        total = int(counts_row["total"])
        if total == 0:
            raise InputError(f"input column {column!r} (the timestamp) is empty in the sample")
        counts = {c: int(counts_row[f"c{i}"]) for i, c in enumerate(candidates)}
        best = max(counts.values())
        if best * 2 < total:
            tried = "auto (" + ", ".join(candidates) + ")"
            raw = [r["v"] for r in parsed_df.limit(3).collect()]
            raise InputError(
                f"input column {column!r} does not look like a timestamp: {total - best:,} of {total:,} sampled "
                f"values fit no format tried ({tried}), e.g. {', '.join(repr(str(v)) for v in raw)}; "
                "set input.timestamp_format to the pattern of these values (Spark datetime patterns)"
            )
        tied = [i for i, c in enumerate(candidates) if counts[c] == best]
        chosen = tied[0]
        disagreeing = [
            i
            for i in tied[1:]
            if parsed_df.filter(~F.col(f"c{chosen}").eqNullSafe(F.col(f"c{i}"))).limit(1).count() > 0
        ]
    finally:
        parsed_df.unpersist()
    if disagreeing and full_df is not None:
        decided = _decide_on_all_rows(full_df, column, [candidates[i] for i in [chosen, *disagreeing]])
        if decided is not None:
            return Detection(decided, total, best, counts)
    if disagreeing:
        other = candidates[disagreeing[0]]
        example = (
            sample_df.select(col(column).cast("string").alias("v"))
            .filter(
                ~parse_timestamp(F.col("v"), data_type, candidates[chosen]).eqNullSafe(
                    parse_timestamp(F.col("v"), data_type, other)
                )
            )
            .first()
        )
        raise InputError(
            f"input column {column!r} is ambiguous: its values parse equally as {candidates[chosen]!r} and "
            f"{other!r} but give different timestamps (e.g. {example['v']!r}); set input.timestamp_format to "
            "the one your data uses"
        )
    return Detection(candidates[chosen], total, best, counts)


def _decide_on_all_rows(df: DataFrame, column: str, formats: list[str]) -> str | None:
    """The one of `formats` that parses the most values of the whole column, or None on a tie."""
    data_type = df.schema[column].dataType
    row = df.select(
        *[F.count(parse_timestamp(col(column), data_type, f)).alias(f"c{i}") for i, f in enumerate(formats)]
    ).first()
    counts = [int(row[f"c{i}"]) for i in range(len(formats))]
    best = max(counts)
    winners = [f for f, n in zip(formats, counts) if n == best]
    log.info("timestamp formats %s parse %s of all rows", formats, counts)
    return winners[0] if len(winners) == 1 else None


#: Rows of the seeded sample the detection reads.
SAMPLE_ROWS = 10_000


def resolve_timestamp_format(
    raw_df: DataFrame, input_cfg: dict, seed: int, sample_df: DataFrame | None = None
) -> tuple[dict, str | None]:
    """`input_cfg` with `timestamp_format` resolved, and the detected format (None when it was given)."""
    if input_cfg.get("timestamp_format", "auto") != "auto":
        return input_cfg, None
    column = input_cfg["columns"]["timestamp"]
    if sample_df is None:
        sample_df = seeded_sample(raw_df.select(col(column)), SAMPLE_ROWS, seed)
    detection = detect_timestamp_format(sample_df, column, full_df=raw_df)
    if detection.timestamp_format == NATIVE:
        log.info("timestamps: column %r is typed %s", column, raw_df.schema[column].dataType.simpleString())
    else:
        log.info(
            "timestamps: detected %r (parses %d of %d sampled values)",
            detection.timestamp_format,
            detection.parsed,
            detection.sample_values,
        )
    return {**input_cfg, "timestamp_format": detection.timestamp_format}, detection.timestamp_format


def timestamp_failure(
    ledger_df: DataFrame, column: str, timestamp_format: str, failed: int, checked: int
) -> str:
    """The error for a run where more than half of the timestamps did not parse: three raw values quoted."""
    raw = [
        r[0]
        for r in ledger_df.filter(F.col("reject_reason") == "invalid_timestamp")
        .select(col(column))
        .limit(3)
        .collect()
    ]
    return (
        f"{failed:,} of {checked:,} rows have a timestamp that does not parse as {timestamp_format!r}, "
        f"e.g. {', '.join(repr(str(v)) for v in raw)}; set input.timestamp_format to their pattern "
        "(or 'auto')"
    )
