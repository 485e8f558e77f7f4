"""`io.local_dataframe`: driver-side rows as a DataFrame without a Python worker, as createDataFrame gives them."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import types as T

from segmentation.io import local_dataframe

SCHEMA = T.StructType(
    [
        T.StructField("k", T.IntegerType(), False),
        T.StructField("wcss", T.DoubleType(), True),
        T.StructField("sizes", T.ArrayType(T.LongType(), False), False),
        T.StructField("name", T.StringType(), True),
        T.StructField("chosen", T.BooleanType(), False),
        T.StructField("customers", T.LongType(), False),
    ]
)
ROWS = [
    (2, 1.5, [3, 4], None, True, 3_000_000_000),
    (3, None, [1, 2, 4], 'it\'s, "quoted"', False, 0),
    (4, math.inf, [], "Champions", False, 7),
]


def test_rows_types_and_nulls_as_create_dataframe(spark):
    df = local_dataframe(spark, ROWS, SCHEMA)
    expected = spark.createDataFrame(ROWS, SCHEMA)
    assert [(f.name, f.dataType) for f in df.schema.fields] == [(f.name, f.dataType) for f in SCHEMA.fields]
    assert df.collect() == expected.collect()
    assert df.collect()[1]["name"] == 'it\'s, "quoted"' and df.collect()[1]["wcss"] is None
    # the literals are exact: a long beyond int range and a NaN survive
    nan = local_dataframe(spark, [(5, math.nan, [1], "x", True, 1)], SCHEMA).first()
    assert math.isnan(nan["wcss"]) and ROWS[0][5] == df.first()["customers"]


def test_no_rows_is_an_empty_table_of_the_schema(spark):
    df = local_dataframe(spark, [], SCHEMA)
    assert [(f.name, f.dataType) for f in df.schema.fields] == [(f.name, f.dataType) for f in SCHEMA.fields]
    assert df.count() == 0


def test_a_row_of_the_wrong_width_is_an_error(spark):
    with pytest.raises(ValueError, match=r"row has 2 values for 6 columns: \(1, 2\.0\)"):
        local_dataframe(spark, [(1, 2.0)], SCHEMA)
