"""Prepare stage: per-customer features -> a scaled feature vector, as a fitted Spark ML PipelineModel.

Takes the clustered customers of the features stage and hands the model stage a PipelineModel whose
transform adds `features` (assembled, after log1p and optional capping) and `scaled` (mean 0, std 1). The
log1p and the capping bounds live inside the model (a SQLTransformer), so scoring later repeats them exactly.
"""

from __future__ import annotations

from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import (
    Imputer,
    OneHotEncoder,
    SQLTransformer,
    StandardScaler,
    StringIndexer,
    VectorAssembler,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.io import col, quoted
from segmentation.sources.customers import internal_names

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


def fit_preparation(
    customers_df: DataFrame, prepare_cfg: dict[str, Any], input_cfg: dict[str, Any] | None = None
) -> tuple[PipelineModel, dict[str, tuple[float, float]]]:
    """Fit the preparation on the customers to cluster; also return the capping bounds used (or {}).

    With a customer table's `input_cfg` (`input.kind: customers`) its columns are read under their internal
    names, an Imputer fills missing numbers (`input.missing: impute`) and categorical model features are
    one-hot encoded (StringIndexer + OneHotEncoder, every category kept plus one for missing or unseen
    values). Then log1p and capping of the numeric model features (a SQLTransformer), VectorAssembler and
    StandardScaler into `scaled`; numeric features come first in the vector, in `prepare.features` order.
    """
    features = list(prepare_cfg["features"])
    names = internal_names(input_cfg) if input_cfg else {f: f for f in features}
    numeric = [f for f in features if f in (input_cfg["features"] if input_cfg else features)]
    categorical = [f for f in features if input_cfg and f in input_cfg["categorical"]]
    num_cols = [names[f] for f in numeric]
    log1p = [names[f] for f in prepare_cfg["log1p"] if f in numeric]
    stages: list[Any] = []
    source_df = customers_df
    if num_cols and input_cfg and input_cfg["missing"] == "impute":
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


def scaled_dimensions(prep_model: PipelineModel) -> int:
    """Dimensions of the `scaled` vector of a fitted preparation (no Spark job: the scaler's mean vector)."""
    return len(prep_model.stages[-1].mean)
