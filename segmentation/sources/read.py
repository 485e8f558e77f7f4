"""Reading the input: CSV, Parquet, ORC or JSON lines as Spark reads them, a table of the session's catalog
(`input.table`) or of a database over JDBC (`input.format: jdbc`), nothing inferred that could lose a row.

Takes the `input` config section and hands the source stage a DataFrame of the original columns (CSV and JSON
as strings, with a `_corrupt_record` column for lines that do not parse), after checking the input exists
and every mapped column is there. A table keeps its column types, as Parquet does. `_corrupt_record` holds the raw line of a CSV row whose field count does not
match the header, or of a JSON line that is no object; it is always null for Parquet and ORC. Nothing is
inferred from the data: CSV is read with an explicit all-string schema built from its header; Parquet and ORC
keep their types, nanosecond timestamps (pandas, pyarrow) as their integer count, which the timestamp formats
read as `epoch_nanos`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation import jdbc as jdbc_conn
from segmentation.errors import InputError, SchemaError, root_cause
from segmentation.io import HadoopFs

CORRUPT_COLUMN = "_corrupt_record"

log = logging.getLogger(__name__)


def _check_exists(spark: SparkSession, path: str) -> None:
    try:
        matches = HadoopFs(spark, path).glob(path)
    except Exception as exc:  # noqa: BLE001 - any file-system failure is an unreadable input
        raise InputError(f"input path cannot be read: {path} ({type(exc).__name__})") from exc
    if not matches:
        raise InputError(f"input not found: {path}")


#: Roles a transaction log may lack: mapped by default (Online Retail's StockCode, Description), a log without
#: them has no product data, and the product stages are off.
PRODUCT_ROLES = ("product_id", "product_name")


def read_transactions(
    spark: SparkSession, input_cfg: dict[str, Any], require_products: bool = False
) -> tuple[DataFrame, dict[str, Any]]:
    """Read the configured input (a file, folder or glob) with every mapped column checked to exist; returns
    the rows and the input config with the product roles the input lacks unmapped (logged), unless
    `require_products` (`recommend.enabled: true`): then a missing product column is an error too."""
    df = read_input(spark, input_cfg)
    columns = dict(input_cfg["columns"])
    found = set(original_columns(df))
    absent = [r for r in PRODUCT_ROLES if columns.get(r) and columns[r] not in found]
    if absent and not require_products:
        log.info(
            "input has no column %s: no product data (set input.columns.%s to the product column)",
            " or ".join(repr(columns[r]) for r in absent),
            absent[0],
        )
        columns.update({r: None for r in absent})
        if "product_id" in absent:
            columns["product_name"] = None
    check_mapped_columns(df, columns)
    return df, {**input_cfg, "columns": columns}


def input_name(input_cfg: dict[str, Any]) -> str:
    """What the input is, for logs and the manifest: a path, `table db.name`, or a JDBC URL (no secret)."""
    if input_cfg.get("table"):
        return f"table {input_cfg['table']}"
    if input_cfg["format"] == "jdbc":
        jdbc = input_cfg["jdbc"]
        what = jdbc["table"] or "query"
        return f"{jdbc_conn.describe(jdbc)} ({what})"
    return str(input_cfg["path"])


def read_input(spark: SparkSession, input_cfg: dict[str, Any]) -> DataFrame:
    """The input's rows (`input.table` of the session's catalog, a JDBC table or query, or files in
    `input.format`), plus `_corrupt_record`; one clear line when it cannot be read."""
    if input_cfg.get("table"):
        return _read_table(spark, input_cfg["table"])
    if input_cfg["format"] == "jdbc":
        return _read_jdbc(spark, input_cfg["jdbc"])
    path, fmt = str(input_cfg["path"]), input_cfg["format"]
    _check_exists(spark, path)
    try:
        if fmt == "csv":
            return _read_csv(spark, path, input_cfg.get("csv") or {})
        if fmt == "json":
            return _read_json(spark, path)
        if fmt == "parquet":
            # pandas and pyarrow write TIMESTAMP(NANOS), which Spark refuses as a type: read as the count
            spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
        return spark.read.format(fmt).load(path).withColumn(CORRUPT_COLUMN, F.lit(None).cast("string"))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable input: say why in one line
        raise InputError(f"cannot read {fmt} input {path}: {root_cause(exc)}") from exc


def _read_table(spark: SparkSession, name: str) -> DataFrame:
    """A table (or view) of the session's catalog: the cluster's metastore, or the local one the job starts."""
    if not spark.catalog.tableExists(name):
        raise InputError(
            f"input.table {name!r} is not a table of the session's catalog "
            f"({spark.conf.get('spark.sql.catalogImplementation', 'in-memory')}); "
            f"databases: {', '.join(sorted(d.name for d in spark.catalog.listDatabases())) or 'none'}"
        )
    try:
        return spark.table(name).withColumn(CORRUPT_COLUMN, F.lit(None).cast("string"))
    except Exception as exc:  # noqa: BLE001 - unreadable table: say why in one line
        raise InputError(f"cannot read input.table {name}: {root_cause(exc)}") from exc


def _read_jdbc(spark: SparkSession, cfg: dict[str, Any]) -> DataFrame:
    """A table or query of a database over Spark's JDBC source: one read, or `num_partitions` parallel reads
    over ranges of `partition_column` (numeric, date or timestamp) between the bounds; rows are fetched
    `fetch_size` at a time. Spark asks the database for the schema here, so a bad login, a missing driver or
    table is one line before anything runs."""
    options = {
        "url": cfg["url"],
        "fetchsize": str(int(cfg["fetch_size"])),
        # a TIMESTAMP WITHOUT TIME ZONE is a wall-clock time, read as such (input.time_zone places it), not
        # shifted by the JVM's default zone as a java.sql.Timestamp would be
        "preferTimestampNTZ": "true",
        **jdbc_conn.properties(cfg, "input.jdbc"),
    }
    source = {"dbtable": cfg["table"]} if cfg.get("table") else {"query": cfg["query"]}
    try:
        df = spark.read.format("jdbc").options(**options, **source).load()
        column = cfg.get("partition_column")
        if column:
            if column not in df.columns:
                raise InputError(
                    f"input.jdbc.partition_column {column!r} is not a column of {cfg['table']}; "
                    f"columns: {', '.join(df.columns)}"
                )
            if isinstance(df.schema[column].dataType, T.TimestampNTZType):
                # Spark's own ranges refuse a wall-clock timestamp column: the same ranges, as predicates
                predicates = time_ranges(spark, cfg, column)
                df = spark.read.jdbc(cfg["url"], cfg["table"], predicates=predicates, properties=options)
            else:
                df = (
                    spark.read.format("jdbc")
                    .options(**options, **source)
                    .options(
                        partitionColumn=column,
                        lowerBound=str(cfg["lower_bound"]),
                        upperBound=str(cfg["upper_bound"]),
                        numPartitions=str(int(cfg["num_partitions"])),
                    )
                    .load()
                )
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the schema query failed: driver, login, table
        # Spark 4.1+ reports a refused connection as FAILED_JDBC.CONNECTION without the driver's reason: a
        # connection of our own says which it was (a login refused, a missing driver)
        if "FAILED_JDBC.CONNECTION" in str(exc) and jdbc_conn.driver_class(cfg):
            jdbc_conn.connect(spark, cfg, "input.jdbc").close()
        raise jdbc_conn.connection_error(exc, cfg, "input.jdbc") from exc
    log.info(
        "input: %s, %d read partition(s)",
        input_name({"format": "jdbc", "jdbc": cfg}),
        df.rdd.getNumPartitions(),
    )
    return df.withColumn(CORRUPT_COLUMN, F.lit(None).cast("string"))


def time_ranges(spark: SparkSession, cfg: dict[str, Any], column: str) -> list[str]:
    """WHERE clauses splitting [lower_bound, upper_bound) of a timestamp column into `num_partitions` equal
    ranges, as Spark splits a numeric one: the first also takes earlier times and nulls, the last later ones."""
    try:
        low = dt.datetime.fromisoformat(str(cfg["lower_bound"]))
        high = dt.datetime.fromisoformat(str(cfg["upper_bound"]))
    except ValueError as exc:
        raise InputError(
            f"input.jdbc.lower_bound and upper_bound must be dates or times (YYYY-MM-DD[ HH:MM:SS]) for the "
            f"timestamp column {column!r}, got {cfg['lower_bound']!r} and {cfg['upper_bound']!r}"
        ) from exc
    if high <= low:
        raise InputError(
            f"input.jdbc.upper_bound {cfg['upper_bound']!r} must be after lower_bound {cfg['lower_bound']!r}"
        )
    n = int(cfg["num_partitions"])
    quoted_column = spark.sparkContext._jvm.org.apache.spark.sql.jdbc.JdbcDialects.get(
        cfg["url"]
    ).quoteIdentifier(column)
    cuts = [f"TIMESTAMP '{(low + (high - low) * i / n).isoformat(sep=' ')}'" for i in range(1, n)]
    if not cuts:
        return ["1 = 1"]
    ranges = [f"{quoted_column} < {cuts[0]} OR {quoted_column} IS NULL"]
    ranges += [f"{quoted_column} >= {a} AND {quoted_column} < {b}" for a, b in zip(cuts, cuts[1:])]
    return [*ranges, f"{quoted_column} >= {cuts[-1]}"]


def _read_json(spark: SparkSession, path: str) -> DataFrame:
    """JSON lines, every value as a string (numbers as written), a line that is no object in `_corrupt_record`."""
    reader = spark.read.options(
        primitivesAsString=True, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT_COLUMN
    )
    inferred = reader.json(path).schema
    fields = [f for f in inferred.fields if f.name != CORRUPT_COLUMN]
    if not fields:
        raise InputError(f"input has no JSON object with fields: {path}")
    schema = T.StructType(fields + [T.StructField(CORRUPT_COLUMN, T.StringType(), True)])
    return reader.schema(schema).json(path)


#: A byte-order mark some writers (Excel, PowerShell) put before the header; Spark keeps it in the first name.
BOM = "\ufeff"


def csv_options(csv_cfg: dict[str, Any]) -> dict[str, Any]:
    """Spark's CSV options for `input.csv`: the values exactly as written, the header's names by position."""
    return {
        "header": True,
        "sep": csv_cfg.get("delimiter", ","),
        "encoding": csv_cfg.get("encoding", "UTF-8"),
        # quoted fields may span lines; without it every physical line is a row
        "multiLine": bool(csv_cfg.get("multiline", False)),
        # keep values exactly as written: no trimming, no null markers other than an empty field
        "ignoreLeadingWhiteSpace": False,
        "ignoreTrailingWhiteSpace": False,
        # the header gives the names (by position), whatever a file's first line says
        "enforceSchema": True,
    }


def csv_schema(header: list[str]) -> T.StructType:
    """The all-string schema of a CSV with this header (a leading byte-order mark dropped), plus the column
    that holds the raw line of a row that does not parse."""
    header = [header[0].removeprefix(BOM), *header[1:]]
    return T.StructType(
        [T.StructField(name, T.StringType(), True) for name in header]
        + [T.StructField(CORRUPT_COLUMN, T.StringType(), True)]
    )


#: How rows that do not parse are kept: the raw line in `CORRUPT_COLUMN` (CSV and JSON readers).
PERMISSIVE = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN}


def _read_csv(spark: SparkSession, path: str, csv_cfg: dict[str, Any]) -> DataFrame:
    options = csv_options(csv_cfg)
    header = spark.read.options(**options).csv(path).columns
    if not header:
        raise InputError(f"input has no header row: {path}")
    return spark.read.options(**options, **PERMISSIVE).schema(csv_schema(header)).csv(path)


def seeded_sample(df: DataFrame, rows: int, seed: int, total: int | None = None) -> DataFrame:
    """About `rows` rows drawn evenly from the whole input with `seed` (the same rows on every run);
    `total`: the input's row count when the caller has it."""
    total = df.count() if total is None else total
    fraction = min(1.0, 1.2 * rows / total) if total else 1.0
    return df.sample(withReplacement=False, fraction=fraction, seed=seed).limit(rows)


def original_columns(df: DataFrame) -> list[str]:
    """The input's own columns, without the reader's bookkeeping column."""
    return [c for c in df.columns if c != CORRUPT_COLUMN]


def check_mapped_columns(df: DataFrame, columns: dict[str, str | None]) -> None:
    """Raise SchemaError naming every mapped column the input lacks, and listing those it has."""
    found = original_columns(df)
    missing = [f"{role}={name!r}" for role, name in columns.items() if name and name not in found]
    if missing:
        raise SchemaError(
            f"input is missing mapped column(s) {', '.join(missing)}; found columns: {', '.join(found)}"
        )
