"""Spark helpers every stage may use: column references and white space, small tables built in the JVM, and
the Hadoop file system (local paths, HDFS, S3) that reading and publishing go through.

`col`/`quoted` reach columns whose names hold spaces or dots, `strip` trims the white space Spark's `trim`
leaves, `local_dataframe` builds a small table without a Python worker, `HadoopFs` lists, moves and writes
files. The readers themselves are in `sources/read.py`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import OutputError


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
