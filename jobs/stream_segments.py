"""spark-submit entry point: new transaction files move customers between segments, scored by a published model.

    stream-segments --model-path output --landing incoming/ --output live/ --checkpoint live/_checkpoint
    spark-submit jobs/stream_segments.py --model-path output --landing ... --output ... --checkpoint ... --available-now

Runs until stopped (SIGTERM or Ctrl-C: the running batch is finished, exit 0), or with --available-now reads
every file present and exits. A restart with the same --output and --checkpoint continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.cli import Sessions, config_from, date_arg, int_at_least, run_job, session_conf


def positive_seconds(value: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        seconds = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from exc
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stream-segments",
        description="Keep every customer's features and segment current as transaction files arrive.",
    )
    parser.add_argument(
        "--model-path", required=True, help="output root of the training runs (holds models/)"
    )
    parser.add_argument("--model-snapshot", type=date_arg, help="snapshot of the model (default: the latest)")
    parser.add_argument("--landing", required=True, help="folder new transaction files arrive in")
    parser.add_argument("--output", required=True, help="output root of the stream's tables")
    parser.add_argument("--checkpoint", required=True, help="Spark's checkpoint folder of the stream")
    parser.add_argument(
        "--config",
        help="YAML job config the model was trained with: input layout, cleaning, and the training input the "
        "state is seeded from",
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--trigger-seconds", type=positive_seconds, default=1.0, help="micro-batch interval (default 1)"
    )
    when.add_argument(
        "--available-now", action="store_true", help="read every file present, then exit (catch-up, tests)"
    )
    parser.add_argument("--max-files-per-trigger", type=int_at_least(1), help="files per micro-batch at most")
    parser.add_argument(
        "--as-of",
        type=date_arg,
        help="count recency and tenure to this date at least (a clock tick re-scores every customer)",
    )
    parser.add_argument(
        "--daily-tick",
        action="store_true",
        help="move the state's date to today (input.time_zone) as days pass, without new lines",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logs and Spark INFO logs")
    return parser.parse_args(argv)


def job_config(args: argparse.Namespace) -> dict[str, Any]:
    return config_from(args.config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def job(sessions: Sessions) -> int:
        from segmentation.stream.run import SESSION_CONF, run_stream, stop_on_sigterm

        cfg = job_config(args)
        stop = stop_on_sigterm()
        spark = sessions.start("stream-segments", conf={**SESSION_CONF, **session_conf(cfg)})
        summary = run_stream(
            spark,
            cfg,
            args.model_path,
            args.landing,
            args.output,
            args.checkpoint,
            model_snapshot=args.model_snapshot,
            trigger_seconds=args.trigger_seconds,
            available_now=args.available_now,
            max_files_per_trigger=args.max_files_per_trigger,
            as_of=args.as_of,
            daily_tick=args.daily_tick,
            stop=stop,
        )
        print(
            f"Stream with the model of {summary['model_snapshot_date']} (run {summary['run_id']}): "
            f"{summary['versions']} version(s) committed by this run, now at version {summary['version']} "
            f"(micro-batch {summary['last_batch_id']}), as of {summary['as_of_date']}: "
            f"{summary['output_path']}/customer_state"
        )
        return 0

    return run_job("stream-segments", args.verbose, job)


if __name__ == "__main__":
    sys.exit(main())
