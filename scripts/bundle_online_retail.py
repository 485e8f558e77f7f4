"""Bundle the UCI "Online Retail" daily CSVs as compact, zstd-compressed Parquet inside the package.

    python scripts/bundle_online_retail.py
    python scripts/bundle_online_retail.py --source /path/to/by-day --dest /tmp/online_retail

Reads every `*.csv` under --source (one file per day, each with a header; by default
`../shared/data/online_retail/by-day` next to the repo) in file-name order, i.e. chronologically, and writes
one Parquet file per month, `part-YYYY-MM.parquet`, to --dest (by default `segmentation/data/online_retail/`),
plus a README.md with the data set's CC BY 4.0 attribution.

The copy is lossless with respect to the CSV text: every column is read and stored as a string exactly as
written ("17850.0" stays "17850.0", "2.10" stays "2.10", whitespace is kept), no type is inferred, and only an
empty field becomes null (not "NA", "NULL", "nan", ...). Row order is kept. Cleaning and typing are the job's
business, so the bundled data exercises the same validation as the raw CSVs. pyarrow only; no Spark.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "online_retail" / "by-day"
DEFAULT_DEST = REPO / "segmentation" / "data" / "online_retail"

COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
DAY_FILE = re.compile(r"^(\d{4}-\d{2})-\d{2}\.csv$")
PART_GLOB = "part-*.parquet"
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 19
ROW_GROUP_SIZE = 128 * 1024

README = """\
# Bundled data: UCI "Online Retail" (id 352)

Daqing Chen, Sai Liang Sain, Kun Guo (2012). "Online Retail" data set. UCI Machine Learning Repository,
https://archive.ics.uci.edu/dataset/352/online+retail .
Licensed under the Creative Commons Attribution 4.0 International licence (CC BY 4.0,
https://creativecommons.org/licenses/by/4.0/).

Transactions of a UK-based online retailer, InvoiceDate {first} .. {last}: {rows:,} rows.

## How this copy was produced

`scripts/bundle_online_retail.py` converted the daily CSV files of the data set (the layout used by the book
"Spark: The Definitive Guide": one file per day, each with a header) into one zstd-compressed Parquet file per
month, `part-YYYY-MM.parquet`, rows in their original order. The content is otherwise unchanged: all eight
columns are strings exactly as written in the CSV (for example CustomerID "17850.0", InvoiceDate
"2010-12-01 08:26:00"); an empty CSV field is null. No row was removed or corrected: missing customer ids,
cancellations, duplicates and non-positive prices are all still there, for the job to handle.

Columns: {columns}.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="directory of daily CSV files YYYY-MM-DD.csv (default: %(default)s)",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        help="output directory for part-YYYY-MM.parquet and README.md (default: %(default)s)",
    )
    return parser.parse_args(argv)


def files_by_month(source: Path) -> dict[str, list[Path]]:
    """The daily CSVs grouped by month ("YYYY-MM"), months and days in chronological order."""
    months: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(source.glob("*.csv")):
        match = DAY_FILE.match(path.name)
        if match is None:
            raise SystemExit(
                f"bundle_online_retail.py: error: unexpected file name {path.name!r} in {source}"
            )
        months[match.group(1)].append(path)
    if not months:
        raise SystemExit(f"bundle_online_retail.py: error: no *.csv files in {source}")
    return dict(sorted(months.items()))


def read_day(path: Path) -> pa.Table:
    """One daily CSV, every column a string as written; only an empty field is null."""
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(encoding="utf8"),
        parse_options=pacsv.ParseOptions(newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in COLUMNS},
            include_columns=list(COLUMNS),
            strings_can_be_null=True,
            null_values=[""],
            quoted_strings_can_be_null=True,
        ),
    )
    if tuple(table.column_names) != COLUMNS:
        raise SystemExit(
            f"bundle_online_retail.py: error: {path} has columns {table.column_names}, "
            f"expected {list(COLUMNS)}"
        )
    return table


def write_month(tables: list[pa.Table], target: Path) -> pa.Table:
    """Concatenate one month's days and write them to `target` (via a temporary file); returns the table."""
    table = pa.concat_tables(tables).combine_chunks()
    tmp = target.with_name(target.name + ".tmp")
    pq.write_table(
        table,
        tmp,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        row_group_size=ROW_GROUP_SIZE,
        use_dictionary=True,
    )
    tmp.replace(target)
    return table


def bundle(source: Path, dest: Path) -> tuple[int, int]:
    """Write the monthly Parquet parts and the README; returns (rows written, total bytes of the parts)."""
    months = files_by_month(source)
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(PART_GLOB):
        stale.unlink()
    rows = 0
    total_bytes = 0
    first: str | None = None
    last: str | None = None
    for month, paths in months.items():
        target = dest / f"part-{month}.parquet"
        table = write_month([read_day(path) for path in paths], target)
        rows += table.num_rows
        total_bytes += target.stat().st_size
        # ISO timestamps as written order lexically; only used to describe the range in the README
        low, high = pc.min_max(table["InvoiceDate"]).values()
        if low.is_valid:
            first = low.as_py() if first is None else min(first, low.as_py())
            last = high.as_py() if last is None else max(last, high.as_py())
    readme = README.format(rows=rows, first=first, last=last, columns=", ".join(COLUMNS))
    (dest / "README.md").write_text(readme, encoding="utf-8")
    return rows, total_bytes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source, dest = args.source.resolve(), args.dest.resolve()
    if not source.is_dir():
        print(f"bundle_online_retail.py: error: source directory {source} not found", file=sys.stderr)
        return 2
    rows, total_bytes = bundle(source, dest)
    parts = len(list(dest.glob(PART_GLOB)))
    mib = total_bytes / 2**20
    print(f"wrote {rows:,} rows in {parts} files to {dest}: {total_bytes:,} bytes ({mib:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
