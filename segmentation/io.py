"""I/O stage: read the raw transaction log, and the file-system operations that publishing needs.

Reading hands the validate stage a DataFrame of the input's original columns plus `_corrupt_record` (the raw
line of a CSV row whose field count does not match the header, or of a JSON line that is no object; always null
for Parquet and ORC). Nothing is inferred from the data: CSV and JSON values are read as strings (CSV with an
explicit schema built from the header); Parquet and ORC keep their types, nanosecond timestamps (pandas,
pyarrow) as their integer count, which the timestamp formats read as `epoch_nanos`.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import InputError, OutputError, SchemaError, root_cause

CORRUPT_COLUMN = "_corrupt_record"


def quoted(name: str) -> str:
    """Backtick-quote a column name so spaces, dots, `$` and parentheses are taken literally."""
    return "`" + name.replace("`", "``") + "`"


def col(name: str):
    """`F.col` for any column name, including ones with spaces or dots."""
    return F.col(quoted(name))


#: What `strip` removes from both ends: Java's `\s` (space, tab, newline, vertical tab, form feed, return).
WHITE_SPACE = " \t\n\x0b\f\r"


def strip(c: Column) -> Column:
    """The value as a string without leading or trailing white space (tabs and newlines too, not only spaces).
    `btrim` with a character set: the same as a `^\\s+|\\s+$` regex, without a regex per value."""
    return F.btrim(c.cast("string"), F.lit(WHITE_SPACE))


def local_dataframe(spark: SparkSession, rows: list[tuple], schema: T.StructType) -> DataFrame:
    """A few driver-side rows (profiles, elbow, centers) as a DataFrame of `schema`'s columns and types, built from
    literals in the JVM. `createDataFrame` of a Python list needs a Python worker to decode the rows when it is
    computed: about 0.3 s more per table on a warm session, more when the worker has to start."""
    if not rows:
        return spark.range(0).select(*[F.lit(None).cast(f.dataType).alias(f.name) for f in schema.fields])
    structs = []
    for row in rows:
        if len(row) != len(schema.fields):
            raise ValueError(f"row has {len(row)} values for {len(schema.fields)} columns: {row!r}")
        structs.append(
            F.struct(*[F.lit(v).cast(f.dataType).alias(f.name) for v, f in zip(row, schema.fields)])
        )
    return spark.range(1).select(F.inline(F.array(*structs)))


class HadoopFs:
    """The few Hadoop FileSystem calls publishing needs, so the same code works on local disk, HDFS or S3."""

    def __init__(self, spark: SparkSession, root: str):
        self._jvm = spark.sparkContext._jvm
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        self.fs = self._jvm.org.apache.hadoop.fs.Path(root).getFileSystem(conf)

    def path(self, p: str):
        return self._jvm.org.apache.hadoop.fs.Path(p)

    def exists(self, p: str) -> bool:
        return bool(self.fs.exists(self.path(p)))

    def glob(self, pattern: str) -> list[str]:
        statuses = self.fs.globStatus(self.path(pattern))
        return [] if statuses is None else [str(s.getPath().toString()) for s in statuses]

    def mkdirs(self, p: str) -> None:
        if not self.fs.mkdirs(self.path(p)):
            raise OutputError(f"cannot create directory {p}")

    def delete(self, p: str) -> None:
        self.fs.delete(self.path(p), True)

    def rename(self, src: str, dst: str) -> None:
        if not self.fs.rename(self.path(src), self.path(dst)):
            raise OutputError(f"cannot move {src} to {dst}")

    def list_dir(self, p: str) -> list[str]:
        if not self.exists(p):
            return []
        return [str(s.getPath().getName()) for s in self.fs.listStatus(self.path(p))]

    def write_text(self, p: str, text: str) -> None:
        out = self.fs.create(self.path(p), True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()

    def read_text(self, p: str) -> str:
        stream = self.fs.open(self.path(p))
        reader = self._jvm.java.io.BufferedReader(self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
        try:
            lines = []
            line = reader.readLine()
            while line is not None:
                lines.append(line)
                line = reader.readLine()
            return "\n".join(lines)
        finally:
            reader.close()


def _check_exists(spark: SparkSession, path: str) -> None:
    try:
        matches = HadoopFs(spark, path).glob(path)
    except Exception as exc:  # noqa: BLE001 - any file-system failure is an unreadable input
        raise InputError(f"input path cannot be read: {path} ({type(exc).__name__})") from exc
    if not matches:
        raise InputError(f"input not found: {path}")


def read_transactions(spark: SparkSession, input_cfg: dict[str, Any]) -> DataFrame:
    """Read the configured input (a file, folder or glob) with every mapped column checked to exist."""
    df = read_input(spark, input_cfg)
    check_mapped_columns(df, input_cfg["columns"])
    return df


def read_input(spark: SparkSession, input_cfg: dict[str, Any]) -> DataFrame:
    """The input's rows in `input.format`, plus `_corrupt_record`; one clear line when it cannot be read."""
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


def _read_csv(spark: SparkSession, path: str, csv_cfg: dict[str, Any]) -> DataFrame:
    options = {
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
    header = spark.read.options(**options).csv(path).columns
    if not header:
        raise InputError(f"input has no header row: {path}")
    header = [header[0].removeprefix(BOM), *header[1:]]
    schema = T.StructType(
        [T.StructField(name, T.StringType(), True) for name in header]
        + [T.StructField(CORRUPT_COLUMN, T.StringType(), True)]
    )
    return (
        spark.read.options(**options)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
        .schema(schema)
        .csv(path)
    )


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
