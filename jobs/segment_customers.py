"""spark-submit entry point: raw transactions -> published customer segments for one snapshot.

    segment-customers --config conf/online_retail.yaml
    segment-customers --config my.yaml --check      # a dry run: what would be read and rejected
    spark-submit jobs/segment_customers.py --config conf/online_retail.yaml --k-min 2 --k-max 8

Without --config it runs on the bundled Online Retail data with the defaults.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.cli import Sessions, config_from, date_arg, input_overrides, int_at_least, run_job, session_conf
from segmentation.config import INPUT_FORMATS
from segmentation.publish.snapshot import TABLES
from segmentation.sources.check import CHECK_ROWS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="segment-customers",
        description="Segment customers from raw transactions with Spark ML KMeans and publish the snapshot.",
    )
    parser.add_argument("--config", help="YAML job config (default: bundled Online Retail data and defaults)")
    parser.add_argument("--input", help="input file, folder or glob (overrides input.path)")
    parser.add_argument("--input-format", choices=list(INPUT_FORMATS), help="overrides input.format")
    parser.add_argument("--output", help="output root (overrides output.path)")
    parser.add_argument(
        "--snapshot-date", type=date_arg, help="YYYY-MM-DD; lines on or after it are set aside"
    )
    parser.add_argument("--k", type=int_at_least(2), help="fixed number of segments (no sweep)")
    parser.add_argument("--k-min", type=int_at_least(2), help="smallest k of the sweep")
    parser.add_argument("--k-max", type=int_at_least(2), help="largest k of the sweep")
    parser.add_argument("--seed", type=int_at_least(0), help="KMeans seed (overrides model.seed)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="dry run: read a seeded sample, print the mapping, formats, parsed rows and would-be rejects; "
        "write nothing (exit 0 when the run would start, 2 otherwise)",
    )
    parser.add_argument(
        "--check-rows",
        type=int_at_least(1),
        default=CHECK_ROWS,
        help="rows of the --check sample (default %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logs and Spark INFO logs")
    args = parser.parse_args(argv)
    if args.k is not None and (args.k_min is not None or args.k_max is not None):
        parser.error("--k cannot be combined with --k-min/--k-max")
    if args.k_min is not None and args.k_max is not None and args.k_min > args.k_max:
        parser.error(f"invalid k range: --k-min {args.k_min} is greater than --k-max {args.k_max}")
    return args


def job_config(args: argparse.Namespace) -> dict[str, Any]:
    """The validated config: the YAML file (or defaults) with the command-line options on top."""
    return config_from(
        args.config,
        **input_overrides(args),
        snapshot_date=args.snapshot_date,
        k=args.k,
        k_min=args.k_min,
        k_max=args.k_max,
        seed=args.seed,
    )


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """What a person reads at the end of a run: where the outputs are and a table of the segments."""
    rejected = manifest["rejected_rows"]
    lines = [
        f"Published snapshot {manifest['snapshot_date']} (run {manifest['run_id']})",
        f"  rows: {manifest['input_rows']:,} input = {manifest['accepted_rows']:,} accepted "
        f"+ {sum(rejected.values()):,} rejected {dict(rejected) if rejected else ''}".rstrip(),
        f"  customers: {manifest['customers']:,} ({manifest['clustered_customers']:,} clustered, "
        f"excluded {manifest['excluded_customers'] or 'none'})",
        f"  k = {manifest['chosen_k']}: {manifest['chosen_k_reason']}",
        f"Outputs under {manifest['output_path']}:",
    ]
    if manifest.get("catalog"):
        lines.insert(-1, f"  catalog: {manifest['catalog']}")
    if manifest.get("warehouse"):
        copied = ", ".join(f"{t} ({n})" for t, n in manifest["warehouse"]["rows"].items())
        lines.insert(-1, f"  warehouse: {manifest['warehouse']['schema']}: {copied}")
    report = manifest.get("report", True)
    for table in TABLES:
        if table == "reports" and not report:
            continue
        lines.append(
            f"  {table:<19} {manifest['output_path']}/{table}/snapshot_date={manifest['snapshot_date']}"
        )
    lines.append(
        f"Report: {manifest['output_path']}/reports/snapshot_date={manifest['snapshot_date']}/report.html"
        if report
        else "Report: none (output.report is false)"
    )
    if manifest.get("input_kind") == "customers":
        lines += ["", "Segments:", f"{'id':>3}  {'customers':>9} {'share':>6}  segment"]
        for p in manifest["profiles"]:
            lines.append(
                f"{p['segment_id']:>3}  {p['customers']:>9,} {p['share_customers']:>6.1%}  {p['segment_name']}"
            )
        return lines
    # the name column as wide as the longest name ("Needs attention (occasional)"), at least 18
    width = max([18, *(len(p["segment_name"]) for p in manifest["profiles"])])
    header = (
        f"{'id':>3}  {'segment':<{width}} {'customers':>9} {'share':>6} {'revenue':>7}"
        f" {'recency d':>9} {'orders':>6} {'monetary':>10}"
    )
    lines += ["", "Segments (medians per customer):", header, "-" * len(header)]
    for p in manifest["profiles"]:
        lines.append(
            f"{p['segment_id']:>3}  {p['segment_name']:<{width}} {p['customers']:>9,} {p['share_customers']:>6.1%}"
            f" {p['share_revenue']:>7.1%} {p['median_recency_days']:>9.0f} {p['median_frequency']:>6.0f}"
            f" {p['median_monetary']:>10,.0f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def job(sessions: Sessions) -> int:
        cfg = job_config(args)
        if args.check:
            from segmentation.sources.check import check_input

            result = check_input(
                sessions.start("segment-customers-check", conf=session_conf(cfg)), cfg, args.check_rows
            )
            print("\n".join(result.lines))
            if not result.ok:
                print(f"segment-customers: check failed: {result.problem}", file=sys.stderr)
                return 2
            print("Check passed: the run would start (nothing was written).")
            return 0
        from jobs.spark_session import planned_master
        from segmentation.config import resolve_catalog_mode
        from segmentation.pipeline import run_segmentation
        from segmentation.publish.catalog import hive_conf

        cfg["catalog"]["mode"] = resolve_catalog_mode(cfg["catalog"], planned_master())
        conf = {
            **session_conf(cfg),
            **(hive_conf(cfg["catalog"]) if cfg["catalog"]["mode"] == "local" else {}),
        }
        manifest = run_segmentation(sessions.start("segment-customers", conf=conf), cfg)
        print("\n".join(summary_lines(manifest)))
        return 0

    return run_job("segment-customers", args.verbose, job)


if __name__ == "__main__":
    sys.exit(main())
