"""spark-submit entry point: assign segments to customers from new transactions with a saved model.

    score-customers --model-path output --input new_transactions/ --output scored/
    spark-submit jobs/score_customers.py --model-path output --model-snapshot 2011-12-10 --input ... --output ...

The customers' features are computed exactly as in training; no model is fitted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.cli import Sessions, config_from, date_arg, input_overrides, run_job, session_conf
from segmentation.config import INPUT_FORMATS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="score-customers",
        description="Assign segments to customers computed from new transactions, with a published model.",
    )
    parser.add_argument(
        "--model-path", required=True, help="output root of the training runs (holds models/)"
    )
    parser.add_argument("--model-snapshot", type=date_arg, help="snapshot of the model (default: the latest)")
    parser.add_argument(
        "--config", help="YAML job config: input layout and cleaning (as for segment-customers)"
    )
    parser.add_argument("--input", help="transactions to score (overrides input.path)")
    parser.add_argument("--input-format", choices=list(INPUT_FORMATS), help="overrides input.format")
    parser.add_argument("--output", required=True, help="output root of the scored segments")
    parser.add_argument(
        "--scoring-date", type=date_arg, help="YYYY-MM-DD (default: the day after the latest transaction)"
    )
    parser.add_argument("--verbose", action="store_true", help="debug logs and Spark INFO logs")
    return parser.parse_args(argv)


def job_config(args: argparse.Namespace) -> dict[str, Any]:
    """The validated config: the input layout and cleaning of the YAML file with the options on top."""
    return config_from(
        args.config,
        **input_overrides(args),
        snapshot_date=args.scoring_date,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def job(sessions: Sessions) -> int:
        from segmentation.score import score_customers

        cfg = job_config(args)
        spark = sessions.start("score-customers", conf=session_conf(cfg))
        manifest = score_customers(spark, cfg, args.model_path, args.model_snapshot)
        print(
            f"Scored {manifest['customers']:,} customers for {manifest['snapshot_date']} with the model of "
            f"{manifest['model_snapshot_date']} (run {manifest['run_id']}): {manifest['output_path']}/segments/"
            f"snapshot_date={manifest['snapshot_date']}"
        )
        width = max([18, *(len(name) for name in manifest["segments"].values())])
        for sid, n in manifest["segment_sizes"].items():
            print(f"  {sid:>3}  {manifest['segments'][sid]:<{width}} {n:>9,}")
        return 0

    return run_job("score-customers", args.verbose, job)


if __name__ == "__main__":
    sys.exit(main())
