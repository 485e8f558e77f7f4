"""Customer-level input (`input.kind: customers`): read, validate, prepare and profile a table with one row
per customer, clustered directly (no aggregation).

Reading hands on the table's original columns (CSV: all strings, never inferred). Validation gives every row
either no reject reason or exactly one (`CUSTOMER_REJECT_REASONS`, first match wins) and adds the parsed
columns under internal names (`_f0`.. numeric, `_c0`.. categorical), so names with spaces, `$` or
parentheses never reach SQL. Preparation is a Spark ML Pipeline (Imputer, log1p and capping, StringIndexer +
OneHotEncoder, VectorAssembler, StandardScaler) producing `scaled`. Profiles and names come from each
segment's medians against the clustered customers' quartiles, never from a cluster index.
"""

from __future__ import annotations

import math
from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.io import CORRUPT_COLUMN, check_mapped_columns, col, read_input
from segmentation.prepare import PREPARED_SUFFIX, capping_bounds, preparation_pipeline
from segmentation.validate import customer_id_column, decimal_mark, decimal_point_text, strip

#: Every reason a customer row can be rejected for, in the order they are checked.
CUSTOMER_REJECT_REASONS = (
    "malformed_row",
    "missing_customer_id",
    "duplicate_customer_id",
    "invalid_number",
    "missing_value",
)


def internal_names(input_cfg: dict[str, Any]) -> dict[str, str]:
    """Original column name -> internal name: `_f<i>` for numeric features, `_c<i>` for categorical ones."""
    names = {name: f"_f{i}" for i, name in enumerate(input_cfg["features"])}
    names.update({name: f"_c{i}" for i, name in enumerate(input_cfg["categorical"])})
    return names


def read_customer_table(spark: SparkSession, input_cfg: dict[str, Any]) -> DataFrame:
    """Read the customer table (CSV as strings, or Parquet) and check every configured column exists."""
    df = read_input(spark, input_cfg)
    roles = {"customer_id": input_cfg["columns"]["customer_id"]}
    roles.update({f"feature {n!r}": n for n in input_cfg["features"]})
    roles.update({f"categorical {n!r}": n for n in input_cfg["categorical"]})
    check_mapped_columns(df, roles)
    return df


def _as_double(c, data_type: T.DataType, decimal: str = "."):
    if isinstance(data_type, T.NumericType):
        return c.cast("double")
    return F.when(strip(c) == "", None).otherwise(decimal_point_text(strip(c), decimal).try_cast("double"))


def classify_customer_rows(df: DataFrame, input_cfg: dict[str, Any]) -> DataFrame:
    """Parse the configured columns and give each row its reject reason (null when accepted).

    `invalid_number`: a numeric feature that is present but not a finite number. `missing_value`: an empty
    feature or category with `input.missing: reject` (with `impute` it stays null and is imputed later).
    `duplicate_customer_id`: every row of an id that occurs more than once among otherwise valid rows (no row
    can be preferred over another, so none is clustered).
    """
    types = {f.name: f.dataType for f in df.schema.fields}
    names = internal_names(input_cfg)
    parsed = df.withColumn("customer_id", customer_id_column(df, input_cfg["columns"]["customer_id"]))
    for name in input_cfg["features"]:
        parsed = parsed.withColumn(names[name], _as_double(col(name), types[name], decimal_mark(input_cfg)))
    for name in input_cfg["categorical"]:
        value = strip(col(name))
        parsed = parsed.withColumn(names[name], F.when(value == "", None).otherwise(value))
    invalid = F.lit(False)
    missing = F.lit(False)
    for name in input_cfg["features"]:
        raw_present = col(name).isNotNull() & (strip(col(name)) != "")
        value = F.col(names[name])
        invalid = invalid | (raw_present & (value.isNull() | F.isnan(value) | (F.abs(value) == math.inf)))
        missing = missing | ~raw_present
    for name in input_cfg["categorical"]:
        missing = missing | F.col(names[name]).isNull()
    reason = (
        F.when(F.col(CORRUPT_COLUMN).isNotNull(), F.lit("malformed_row"))
        .when(F.col("customer_id").isNull(), F.lit("missing_customer_id"))
        .when(invalid, F.lit("invalid_number"))
    )
    if input_cfg["missing"] == "reject":
        reason = reason.when(missing, F.lit("missing_value"))
    classified = parsed.withColumn("reject_reason", reason)
    valid = F.col("reject_reason").isNull()
    repeats = F.sum(F.when(valid, 1).otherwise(0)).over(Window.partitionBy("customer_id"))
    return classified.withColumn(
        "reject_reason",
        F.when(valid & (repeats > 1), F.lit("duplicate_customer_id")).otherwise(F.col("reject_reason")),
    )


def fit_customer_preparation(
    customers_df: DataFrame, input_cfg: dict[str, Any], prepare_cfg: dict[str, Any]
) -> tuple[PipelineModel, dict[str, tuple[float, float]]]:
    """Fit the preparation on the accepted customers: Imputer (with `input.missing: impute`), log1p and
    capping of numeric model features, StringIndexer + OneHotEncoder of categorical ones (every category
    kept, plus one for missing or unseen values), then VectorAssembler and StandardScaler into `scaled`.
    Numeric features come first in the vector, in `prepare.features` order."""
    names = internal_names(input_cfg)
    numeric = [f for f in prepare_cfg["features"] if f in input_cfg["features"]]
    categorical = [f for f in prepare_cfg["features"] if f in input_cfg["categorical"]]
    num_cols = [names[f] for f in numeric]
    log1p = [names[f] for f in prepare_cfg["log1p"] if f in numeric]
    stages: list[Any] = []
    source_df = customers_df
    if num_cols and input_cfg["missing"] == "impute":
        imputer = Imputer(
            inputCols=num_cols, outputCols=num_cols, strategy=input_cfg["impute_strategy"], relativeError=1e-4
        )
        stages.append(imputer)
        source_df = imputer.fit(customers_df).transform(customers_df)
    bounds: dict[str, tuple[float, float]] = {}
    if num_cols and prepare_cfg.get("cap_quantiles"):
        bounds = capping_bounds(source_df, num_cols, log1p, prepare_cfg["cap_quantiles"])
    vector_cols = []
    if num_cols:
        numeric_stages = preparation_pipeline(num_cols, log1p, bounds).getStages()
        stages.append(numeric_stages[0])  # the SQLTransformer: log1p and capping
        vector_cols += [c + PREPARED_SUFFIX for c in num_cols]
    if categorical:
        cat_cols = [names[f] for f in categorical]
        stages.append(
            StringIndexer(
                inputCols=cat_cols,
                outputCols=[c + "__index" for c in cat_cols],
                handleInvalid="keep",
                stringOrderType="alphabetAsc",
            )
        )
        stages.append(
            OneHotEncoder(
                inputCols=[c + "__index" for c in cat_cols],
                outputCols=[c + "__onehot" for c in cat_cols],
                dropLast=False,
                handleInvalid="error",  # the indexer already maps missing and unseen values to one more index
            )
        )
        vector_cols += [c + "__onehot" for c in cat_cols]
    stages.append(VectorAssembler(inputCols=vector_cols, outputCol="features"))
    stages.append(StandardScaler(inputCol="features", outputCol="scaled", withMean=True, withStd=True))
    model = Pipeline(stages=stages).fit(customers_df)
    original = {v: k for k, v in names.items()}
    return model, {original[c]: b for c, b in bounds.items()}


def vector_size(scaled_df: DataFrame) -> int:
    return len(scaled_df.select("scaled").first()[0])


def segment_order_by(assigned_df: DataFrame, value_col: str) -> dict[int, int]:
    """Cluster index -> segment_id 1..k by the mean of `value_col`, highest first (then size, then index)."""
    rows = (
        assigned_df.groupBy("cluster")
        .agg(F.avg(value_col).alias("m"), F.count(F.lit(1)).alias("n"))
        .collect()
    )
    ordered = sorted(
        rows, key=lambda r: (-(r["m"] if r["m"] is not None else -math.inf), -r["n"], r["cluster"])
    )
    return {int(r["cluster"]): i for i, r in enumerate(ordered, start=1)}


LEVEL_WORDS = {"high": "high", "mid": "average", "low": "low"}


def level(value: float, p25: float, p75: float) -> str:
    """high / mid / low of a segment median against the clustered customers' quartiles."""
    if value >= p75 and value > p25:
        return "high"
    if value <= p25 and value < p75:
        return "low"
    return "mid"


def customer_profiles(
    assigned_df: DataFrame, input_cfg: dict[str, Any], prepare_cfg: dict[str, Any], centers: dict[int, dict]
) -> list[dict[str, Any]]:
    """One profile per segment: size and share, mean and median of every numeric column, the share of each
    category, the center of each numeric model feature (original units), a name and a description.

    Name: the level (high / average / low) of the segment's median of every numeric model feature against
    the clustered customers' p25 and p75, e.g. "High Annual Income (k$), low Spending Score (1-100)"; a
    categorical model feature adds its value when at least 80% of the segment share it. Repeats get " (2)".
    """
    names = internal_names(input_cfg)
    numeric = list(input_cfg["features"])
    model_numeric = [f for f in prepare_cfg["features"] if f in numeric]
    model_categorical = [f for f in prepare_cfg["features"] if f in input_cfg["categorical"]]
    aggs = [F.count(F.lit(1)).alias("customers")]
    for f in numeric:
        aggs.append(F.avg(names[f]).alias(f"mean_{f}"))
        aggs.append(F.percentile_approx(names[f], 0.5, 10000).cast("double").alias(f"median_{f}"))
    stats = {int(r["segment_id"]): r.asDict() for r in assigned_df.groupBy("segment_id").agg(*aggs).collect()}
    shares: dict[int, dict[str, dict[str, float]]] = {sid: {} for sid in stats}
    for f in input_cfg["categorical"]:
        for r in assigned_df.groupBy("segment_id", names[f]).count().collect():
            sid, value = int(r["segment_id"]), r[names[f]] if r[names[f]] is not None else "(missing)"
            shares[sid].setdefault(f, {})[value] = r["count"] / stats[sid]["customers"]
    quartiles = {}
    if model_numeric:
        values = assigned_df.approxQuantile([names[f] for f in model_numeric], [0.25, 0.75], 1e-4)
        quartiles = {f: (v[0], v[1]) for f, v in zip(model_numeric, values)}
    total = sum(s["customers"] for s in stats.values())
    profiles, used = [], {}
    for sid in sorted(stats):
        s = stats[sid]
        parts = [
            f"{LEVEL_WORDS[level(s[f'median_{f}'], *quartiles[f])]} {f}"
            for f in model_numeric
            if s[f"median_{f}"] is not None
        ]
        for f in model_categorical:
            value, share = max(
                shares[sid].get(f, {}).items(), key=lambda kv: (kv[1], kv[0]), default=(None, 0)
            )
            if share >= 0.8:
                parts.append(f"{f} {value}")
        name = ", ".join(parts) or "Mixed"
        name = name[0].upper() + name[1:]
        used[name] = used.get(name, 0) + 1
        if used[name] > 1:
            name = f"{name} ({used[name]})"
        typical = [f"{f} {s[f'median_{f}']:,.4g}" for f in numeric if s[f"median_{f}"] is not None]
        for f in input_cfg["categorical"]:
            top = sorted(shares[sid].get(f, {}).items(), key=lambda kv: (-kv[1], kv[0]))
            typical.append(f"{f}: " + ", ".join(f"{share:.0%} {v}" for v, share in top))
        row: dict[str, Any] = {
            "segment_id": sid,
            "segment_name": name,
            "description": "typical customer (medians): " + "; ".join(typical),
            "customers": int(s["customers"]),
            "share_customers": s["customers"] / total,
        }
        for f in numeric:
            row[f"mean_{f}"] = None if s[f"mean_{f}"] is None else float(s[f"mean_{f}"])
            row[f"median_{f}"] = None if s[f"median_{f}"] is None else float(s[f"median_{f}"])
        for f in input_cfg["categorical"]:
            for value, share in sorted(shares[sid].get(f, {}).items()):
                row[f"share_{f}={value}"] = float(share)
        for f in model_numeric:
            row[f"center_{f}"] = float(centers[sid][f])
        profiles.append(row)
    # every profile has every share column (a category absent from a segment has share 0)
    keys = [k for p in profiles for k in p if k.startswith("share_") and "=" in k]
    for p in profiles:
        for k in keys:
            p.setdefault(k, 0.0)
    return profiles


def demographics_input(input_cfg: dict[str, Any]) -> dict[str, Any]:
    """The customer-table settings of `input.demographics` (its rows are validated like a customer table)."""
    demo = input_cfg["demographics"]
    return {
        "path": demo["path"],
        "format": demo["format"],
        "csv": input_cfg.get("csv") or {},
        "columns": {"customer_id": demo["customer_id"]},
        "features": list(demo["features"]),
        "categorical": list(demo["categorical"]),
        "missing": "reject",
        "impute_strategy": "mean",
    }


def accepted_customers(classified_df: DataFrame, input_cfg: dict[str, Any]) -> DataFrame:
    """The accepted rows of a classified customer table: `customer_id` and the columns under their own names."""
    return classified_df.filter(F.col("reject_reason").isNull()).select(
        "customer_id", *[F.col(internal).alias(name) for name, internal in internal_names(input_cfg).items()]
    )


def with_demographics(customers_df: DataFrame, demographics_df: DataFrame) -> DataFrame:
    """Join demographic columns onto transaction-derived customers; a clusterable customer without an accepted
    demographics row gets `excluded_reason` `no_demographics` (its columns stay null)."""
    joined = customers_df.join(
        demographics_df.withColumn("_has_demographics", F.lit(True)), "customer_id", "left"
    )
    return joined.withColumn(
        "excluded_reason",
        F.coalesce(
            F.col("excluded_reason"),
            F.when(F.col("_has_demographics").isNull(), F.lit("no_demographics")),
        ),
    ).drop("_has_demographics")


def add_demographic_profiles(
    profiles: list[dict[str, Any]], assigned_df: DataFrame, numeric: list[str], categorical: list[str]
) -> None:
    """Add `mean_<f>` per numeric and `share_<f>=<value>` per categorical demographic column to each profile."""
    if numeric:
        aggs = [F.avg(col(f)).alias(f) for f in numeric]
        means = {int(r["segment_id"]): r for r in assigned_df.groupBy("segment_id").agg(*aggs).collect()}
        for p in profiles:
            for f in numeric:
                value = means[p["segment_id"]][f]
                p[f"mean_{f}"] = None if value is None else float(value)
    for f in categorical:
        counts = assigned_df.groupBy("segment_id", col(f).alias("_v")).count().collect()
        values = sorted({r["_v"] if r["_v"] is not None else "(missing)" for r in counts})
        for p in profiles:
            for v in values:
                n = sum(
                    r["count"]
                    for r in counts
                    if r["segment_id"] == p["segment_id"]
                    and (r["_v"] if r["_v"] is not None else "(missing)") == v
                )
                p[f"share_{f}={v}"] = n / p["customers"]
