"""spark-submit entry point: assign segments to customers from new transactions with a saved model.

    score-customers --model-path output --input new_transactions/ --output scored/
    spark-submit jobs/score_customers.py --model-path output --model-snapshot 2011-12-10 --input ... --output ...

The customers' features are computed exactly as in training; no model is fitted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from jobs.segment_customers import _date
from segmentation.config import INPUT_FORMATS, apply_overrides, load_config, validate_config
from segmentation.errors import SegmentationError, root_cause

log = logging.getLogger("jobs.score_customers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="score-customers",
        description="Assign segments to customers computed from new transactions, with a published model.",
    )
    parser.add_argument(
        "--model-path", required=True, help="output root of the training runs (holds models/)"
    )
    parser.add_argument("--model-snapshot", type=_date, help="snapshot of the model (default: the latest)")
    parser.add_argument(
        "--config", help="YAML job config: input layout and cleaning (as for segment-customers)"
    )
    parser.add_argument("--input", help="transactions to score (overrides input.path)")
    parser.add_argument("--input-format", choices=list(INPUT_FORMATS), help="overrides input.format")
    parser.add_argument("--output", required=True, help="output root of the scored segments")
    parser.add_argument(
        "--scoring-date", type=_date, help="YYYY-MM-DD (default: the day after the latest transaction)"
    )
    parser.add_argument("--verbose", action="store_true", help="debug logs and Spark INFO logs")
    return parser.parse_args(argv)


def job_config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = apply_overrides(
        load_config(args.config),
        input=args.input,
        input_format=args.input_format,
        output=args.output,
        snapshot_date=args.scoring_date,
    )
    return validate_config(cfg)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jobs.spark_session import build_spark, configure_logging

    configure_logging(args.verbose)
    spark = None
    try:
        cfg = job_config(args)
        spark = build_spark("score-customers", verbose=args.verbose)
        from segmentation.score import score_customers

        manifest = score_customers(spark, cfg, args.model_path, args.model_snapshot)
    except SegmentationError as exc:
        print(f"score-customers: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one clear line; the trace with --verbose
        if args.verbose:
            log.exception("unexpected failure")
        print(
            f"score-customers: unexpected error: {root_cause(exc)} (rerun with --verbose for details)",
            file=sys.stderr,
        )
        return 1
    finally:
        if spark is not None:
            spark.stop()
    print(
        f"Scored {manifest['customers']:,} customers for {manifest['snapshot_date']} with the model of "
        f"{manifest['model_snapshot_date']} (run {manifest['run_id']}): {manifest['output_path']}/segments/"
        f"snapshot_date={manifest['snapshot_date']}"
    )
    for sid, n in manifest["segment_sizes"].items():
        print(f"  {sid:>3}  {manifest['segments'][sid]:<18} {n:>9,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
