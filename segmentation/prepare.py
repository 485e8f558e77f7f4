"""Prepare stage: per-customer features -> a scaled feature vector, as a fitted Spark ML PipelineModel.

Takes the clustered customers of the features stage and hands the model stage a PipelineModel whose
transform adds `features` (assembled, after log1p and optional capping) and `scaled` (mean 0, std 1). The
log1p and the capping bounds live inside the model (a SQLTransformer), so scoring later repeats them exactly.
"""

from __future__ import annotations

from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.io import col, quoted

PREPARED_SUFFIX = "__prepared"


def _double_literal(x: float) -> str:
    return f"{x:.17g}D"


def _prepared_expression(name: str, log: bool, bounds: tuple[float, float] | None) -> str:
    expr = f"CAST({quoted(name)} AS DOUBLE)"
    if log:
        # features are >= 0 for clustered customers; log1p of a negative value would be NaN, so floor at 0
        expr = f"LOG1P(GREATEST({expr}, 0D))"
    if bounds is not None:
        expr = f"LEAST(GREATEST({expr}, {_double_literal(bounds[0])}), {_double_literal(bounds[1])})"
    return f"{expr} AS {quoted(name + PREPARED_SUFFIX)}"


def capping_bounds(
    df: DataFrame, features: list[str], log1p: list[str], quantiles: list[float], relative_error: float = 1e-4
) -> dict[str, tuple[float, float]]:
    """Per feature, the (lower, upper) approxQuantile of its (log-transformed) values."""
    transformed = df.select(
        *[
            (
                F.log1p(F.greatest(col(f).cast("double"), F.lit(0.0)))
                if f in log1p
                else col(f).cast("double")
            ).alias(f)
            for f in features
        ]
    )
    values = transformed.approxQuantile(features, list(quantiles), relative_error)
    return {f: (float(v[0]), float(v[1])) for f, v in zip(features, values)}


def preparation_pipeline(
    features: list[str], log1p: list[str], bounds: dict[str, tuple[float, float]] | None
) -> Pipeline:
    """log1p + capping (SQLTransformer) -> VectorAssembler -> StandardScaler(mean and std)."""
    select = ", ".join(_prepared_expression(f, f in log1p, (bounds or {}).get(f)) for f in features)
    return Pipeline(
        stages=[
            SQLTransformer(statement=f"SELECT *, {select} FROM __THIS__"),
            VectorAssembler(inputCols=[f + PREPARED_SUFFIX for f in features], outputCol="features"),
            StandardScaler(inputCol="features", outputCol="scaled", withMean=True, withStd=True),
        ]
    )


def fit_preparation(customers_df: DataFrame, prepare_cfg: dict[str, Any]) -> tuple[PipelineModel, dict]:
    """Fit the preparation on the customers to cluster; also return the capping bounds used (or {})."""
    features, log1p = list(prepare_cfg["features"]), list(prepare_cfg["log1p"])
    bounds: dict[str, tuple[float, float]] = {}
    if prepare_cfg.get("cap_quantiles"):
        bounds = capping_bounds(customers_df, features, log1p, prepare_cfg["cap_quantiles"])
    return preparation_pipeline(features, log1p, bounds).fit(customers_df), bounds
