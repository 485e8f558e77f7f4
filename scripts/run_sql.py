"""Run the example queries of scripts/sql/ with DuckDB on a published output (Parquet, Hive partitioning).

    python scripts/run_sql.py OUTPUT [QUERY.sql ...]     (default: every query of scripts/sql/)

Only published snapshots are read (`manifests/snapshot_date=D/_SUCCESS`, see scripts/sql/published.sql).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb

SQL_DIR = Path(__file__).resolve().parent / "sql"
QUERIES = ("segment_sizes_over_time", "top_customers_per_segment", "revenue_share", "champions_to_at_risk")


def connect(output: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with `output` set and the reader's-contract macros defined."""
    con = duckdb.connect()
    con.execute("SET VARIABLE output = ?", [str(Path(output).resolve())])
    con.execute((SQL_DIR / "published.sql").read_text(encoding="utf-8"))
    return con


def run_query(con: duckdb.DuckDBPyConnection, name_or_path: str | Path):
    path = Path(name_or_path)
    if not path.suffix:
        path = SQL_DIR / f"{name_or_path}.sql"
    return con.sql(path.read_text(encoding="utf-8")).df()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="output root of segment-customers")
    parser.add_argument("queries", nargs="*", help="query files or names (default: all)")
    args = parser.parse_args(argv)
    con = connect(args.output)
    for query in args.queries or QUERIES:
        print(f"-- {Path(query).stem}")
        print(run_query(con, query).to_string(index=False))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
