"""The benchmark's third contender, the single-box tool a data engineer would pick: DuckDB reads, cleans and builds
the features in SQL, then the same scikit-learn sweep as the pandas baseline (log1p + clip -> StandardScaler ->
KMeans for k = 2..10 -> knee -> write).

    python scripts/baseline_duckdb.py --input /tmp/gen1m/transactions --output /tmp/duckdb1m

Same semantics as scripts/baseline_pandas.py: lines without a customer out, exact duplicates over all eight
columns out, unparsable quantities, prices and dates out, quantity 0 and price <= 0 out, the id's trailing
".0" dropped, returns (invoice "C..." or a negative quantity) netted from the purchases' value, customers whose
net value is <= 0 left out; recency from the day after the last clean line. DuckDB uses every core. Writes
`segments.parquet` and `timings.json` to --output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_pandas import COLUMNS, Laps, parse_args, sweep_and_write  # noqa: E402

FEATURES = """
WITH kept AS (
    SELECT DISTINCT * FROM raw WHERE CustomerID IS NOT NULL AND trim(CustomerID) <> ''
), typed AS (
    SELECT
        InvoiceNo,
        TRY_CAST(Quantity AS DOUBLE) AS quantity,
        TRY_CAST(UnitPrice AS DOUBLE) AS price,
        try_strptime(InvoiceDate, '%Y-%m-%d %H:%M:%S') AS ts,
        regexp_replace(trim(CustomerID), '\\.0+$', '') AS customer
    FROM kept
), clean AS (
    SELECT *, quantity * price AS value, starts_with(InvoiceNo, 'C') OR quantity < 0 AS is_return
    FROM typed
    WHERE quantity IS NOT NULL AND price IS NOT NULL AND ts IS NOT NULL AND quantity <> 0 AND price > 0
), snapshot AS (
    SELECT CAST(max(ts) AS DATE) + 1 AS day FROM clean
), per_customer AS (
    SELECT
        customer,
        CAST(max(ts) FILTER (WHERE NOT is_return) AS DATE) AS last_day,
        count(DISTINCT InvoiceNo) FILTER (WHERE NOT is_return) AS frequency,
        sum(value) FILTER (WHERE NOT is_return) AS gross,
        coalesce(abs(sum(value) FILTER (WHERE is_return)), 0) AS returned
    FROM clean
    GROUP BY customer
)
SELECT
    customer AS CustomerID,
    date_diff('day', last_day, (SELECT day FROM snapshot)) AS recency_days,
    frequency,
    gross - returned AS monetary
FROM per_customer
WHERE frequency > 0 AND gross - returned > 0
ORDER BY customer
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__.split("\n\n")[0])
    lap = Laps()
    source = Path(args.input)
    files = str(source / "**" / "*.parquet") if source.is_dir() else str(source)
    con = duckdb.connect()
    columns = ", ".join(COLUMNS)
    # queried where it lies, as DuckDB is used: the read happens inside the features' query (the row count
    # comes from the files' footers)
    con.execute(f"CREATE VIEW raw AS SELECT {columns} FROM read_parquet('{files}')")
    input_rows = con.execute("SELECT count(*) FROM raw").fetchone()[0]
    lap("read")
    rfm = con.execute(FEATURES).df().set_index("CustomerID")
    lap("features")
    sweep_and_write(rfm, input_rows, args, lap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
