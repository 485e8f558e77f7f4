"""Benchmark: the dashboard's page queries on an output the size of the 100M-line benchmark's (2.5M customers).

Writes a synthetic published output with DuckDB (segments: 2.5M customers x 2 snapshots in the data contract's
columns; profiles; transitions; manifests with success markers), then times each page's queries through
`segmentation.dashboard.data.Output` (median of 5, after one warm-up). The target: at most 2 s per page.

    .venv/bin/python scripts/bench_dashboard.py [--customers 2500000] [--out /tmp/dashboard-bench]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from segmentation.dashboard.data import Campaign, Output  # noqa: E402

SNAPSHOTS = ("2011-11-10", "2011-12-10")
NAMES = {1: "Champions", 2: "Loyal", 3: "Needs attention", 4: "New", 5: "Hibernating"}


def write_output(root: Path, customers: int) -> None:
    con = duckdb.connect()
    for day in SNAPSHOTS:
        for table in ("segments", "profiles", "transitions", "manifests"):
            (root / table / f"snapshot_date={day}").mkdir(parents=True, exist_ok=True)
        seed = 1 if day == SNAPSHOTS[0] else 2
        con.execute(
            f"""COPY (SELECT CAST(i AS VARCHAR) AS customer_id, CAST(hash(i, {seed}) % 400 AS INT) AS recency_days,
                CAST(1 + hash(i, {seed} + 1) % 30 AS INT) AS frequency, 0 AS tenure_days, 0.0 AS gross, 0.0 AS returns,
                CAST(hash(i, {seed} + 2) % 100000 AS DOUBLE) / 10 AS monetary, 0.0 AS avg_order_value,
                CAST(1 + hash(i, {seed} + 3) % 5 AS INT) AS segment_id, 'x' AS segment_name, NULL AS excluded_reason,
                0.5 AS distance_to_center, 3 AS r_score, 3 AS f_score, 3 AS m_score, '333' AS rfm_score,
                ['Champions', 'Loyal', 'At risk', 'Hibernating'][CAST(1 + hash(i, {seed} + 4) % 4 AS BIGINT)] AS rfm_segment, 'run' AS run_id
                FROM range({customers}) t(i)) TO '{root}/segments/snapshot_date={day}/part-0.parquet' (FORMAT parquet)"""
        )
        con.execute(
            f"""COPY (SELECT s AS segment_id, 'seg' || s AS segment_name, 'act' AS action, 'd' AS description,
                CAST({customers} / 5 AS BIGINT) AS customers, 0.2 AS share_customers, 1e6 AS revenue, 0.2 AS share_revenue,
                'run' AS run_id FROM range(1, 6) t(s)) TO '{root}/profiles/snapshot_date={day}/part-0.parquet' (FORMAT parquet)"""
        )
        con.execute(
            f"""COPY (SELECT 'seg' || a AS from_segment, 'seg' || b AS to_segment, CAST(a AS INT) AS from_segment_id,
                CAST(b AS INT) AS to_segment_id, CAST(1000 * a + b AS BIGINT) AS customers, 1.0 AS revenue,
                DATE '{SNAPSHOTS[0]}' AS previous_snapshot_date, 'run' AS run_id
                FROM range(1, 6) x(a), range(1, 6) y(b)) TO '{root}/transitions/snapshot_date={day}/part-0.parquet' (FORMAT parquet)"""
        )
        manifest = {
            "customers": customers,
            "clustered_customers": customers,
            "rejected_rows": {},
            "chosen_k": 5,
            "chosen_k_reason": "synthetic",
        }
        (root / "manifests" / f"snapshot_date={day}" / "manifest.json").write_text(json.dumps(manifest))
        (root / "manifests" / f"snapshot_date={day}" / "_SUCCESS").write_text("")


def timed(fn) -> float:
    fn()
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_dashboard.py", description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2_500_000)
    parser.add_argument("--out", default="/tmp/dashboard-bench")
    args = parser.parse_args(argv)
    root = Path(args.out)
    if not (root / "manifests").is_dir():
        started = time.perf_counter()
        write_output(root, args.customers)
        print(
            f"wrote {args.customers:,} customers x {len(SNAPSHOTS)} snapshots in {time.perf_counter() - started:.1f} s"
        )
    day = SNAPSHOTS[-1]
    out = Output(root)
    pages = {
        "overview": lambda: (out.manifest(day), out.profiles(day)),
        "trends": out.trends,
        "movement": lambda: out.transitions(day),
        "segment detail": lambda: (out.profiles(day), out.rfm_crosstab(day, 2)),
        "customer lookup": lambda: out.customer("123456"),
        "campaign (count + 200 rows)": lambda: (
            out.ranges(day),
            out.rfm_segments(day),
            out.campaign_size(day, Campaign([1, 3], ["Champions"], (0, 100), (100, 5000))),
            out.campaign(day, Campaign([1, 3], ["Champions"], (0, 100), (100, 5000)), limit=200),
        ),
        "campaign export (all rows)": lambda: out.campaign(
            day, Campaign([1, 3], ["Champions"], (0, 100), (100, 5000))
        ),
    }
    results = {name: round(timed(fn), 3) for name, fn in pages.items()}
    for name, seconds in results.items():
        print(f"{name:<30} {seconds:6.3f} s")
    print(json.dumps({"customers": args.customers, "median_s": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
